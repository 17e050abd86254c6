"""The SAEs spliced into one model for attribution: ordered by depth, one per site, all of that model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..saes import SAE
from ..sites import Site, SiteError
from .config import AttributionError


@dataclass(frozen=True)
class Dictionary:
    """One SAE at its site, with the name it is shown and linked under (a store id or a directory)."""

    sae: SAE
    site: Site
    name: str


def dictionaries(model: nn.Module, model_name: str, saes: Sequence[tuple[str, SAE]]) -> list[Dictionary]:
    """The SAEs ordered by depth, checked to read this model at distinct sites; an error names the SAE at fault."""
    if not saes:
        raise AttributionError("sae", "give at least one SAE")
    out = []
    for name, sae in saes:
        if sae.transcodes:  # its encoder and decoder sit at different sites; the replacement model handles those
            raise AttributionError("sae", f"SAE {name} is a transcoder: a set of transcoders (one per layer) gets a "
                                          "replacement-model graph (saescope replacement-graph) instead")
        trained_on = sae.cfg.provenance.model
        if trained_on is not None and trained_on != model_name:
            raise AttributionError("sae", f"SAE {name} was trained on {trained_on}, not {model_name}; "
                                          "every SAE of a set must read the same model")
        try:
            site = sae.site_in(model)
        except SiteError as err:
            raise AttributionError("sae", f"SAE {name}: {err}") from None
        out.append(Dictionary(sae.eval().requires_grad_(False), site, name))
    out.sort(key=lambda d: d.site.depth)
    sites = [d.site for d in out]
    if len(set(sites)) != len(sites):
        repeated = next(s for s in sites if sites.count(s) > 1)
        raise AttributionError("sae", f"two SAEs read {repeated.name}; give one SAE per site")
    return out
