"""Hook-site names and the modules they live on, found from a model's structure.

One naming scheme for every architecture: `layers.{i}.resid_pre`, `layers.{i}.resid_post`,
`layers.{i}.mlp_out` and `layers.{i}.attn_out`. TransformerLens/SAELens names such as
`blocks.{i}.hook_resid_post` are accepted as aliases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

KINDS = ("resid_pre", "resid_post", "mlp_out", "attn_out")
FORWARD_ORDER = ("resid_pre", "attn_out", "mlp_out", "resid_post")
"""The kinds of one layer in the order a forward pass computes them."""

_CANONICAL = re.compile(r"^layers\.(\d+)\.(resid_pre|resid_post|mlp_out|attn_out)$")
_ALIAS = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out)$")

# Words that name the attention and MLP children of a decoder block across families
# (Llama/Qwen/Gemma: self_attn, mlp; GPT-2: attn, mlp; GPT-NeoX: attention, mlp; Falcon/BLOOM/MPT
# variants: self_attention, mlp, ffn).
_ATTN_WORDS = ("self_attn", "self_attention", "attention", "attn")
_MLP_WORDS = ("mlp", "feed_forward", "ffn")


class SiteError(ValueError):
    """A site name that does not parse or does not exist in the model; the message lists valid ones."""


@dataclass(frozen=True)
class Site:
    """A parsed hook site: which decoder layer and which stream."""

    layer: int
    kind: str

    @property
    def name(self) -> str:
        """The canonical name, used in manifests and SAE configs."""
        return f"layers.{self.layer}.{self.kind}"

    @property
    def hook_name(self) -> str:
        """The TransformerLens-style name SAELens writes into cfg.json."""
        return f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def depth(self) -> tuple[int, int]:
        """Sort key in forward order: earlier sites are computed first."""
        return self.layer, FORWARD_ORDER.index(self.kind)

    def within(self, n_layers: int) -> Site:
        """This site, checked against a model's depth."""
        if not 0 <= self.layer < n_layers:
            raise SiteError(f"layer {self.layer} is out of range: this model has layers 0..{n_layers - 1}")
        return self


def parse_site(name: str, n_layers: int | None = None) -> Site:
    """Parse a canonical or aliased site name, checking the layer against the model's depth."""
    match = _CANONICAL.match(name.strip()) or _ALIAS.match(name.strip())
    if match is None:
        raise SiteError(
            f"unknown site {name!r}; valid forms are layers.N.{{{','.join(KINDS)}}} "
            "or blocks.N.hook_{resid_pre,resid_post,mlp_out,attn_out}"
        )
    site = Site(layer=int(match.group(1)), kind=match.group(2))
    return site if n_layers is None else site.within(n_layers)


def parse_sites(names: str, n_layers: int | None = None) -> tuple[Site, ...]:
    """One site name or several, comma-separated, in forward order (the order attribution walks them).

    A site named twice (also as its SAELens alias) is an error rather than a second copy of its activations.
    """
    sites = [parse_site(name, n_layers) for name in names.split(",")] if names.strip() else []
    if not sites:
        raise SiteError("no site given; name one, or several separated by commas")
    twice = sorted({site.name for site in sites if sites.count(site) > 1})
    if twice:
        raise SiteError(f"site {', '.join(twice)} is named more than once")
    return tuple(sorted(sites, key=lambda site: site.depth))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks: the one ModuleList whose length is the model's layer count."""
    n_layers = num_layers(model)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if len(candidates) != 1:
        raise SiteError(
            f"cannot find the decoder blocks of {type(model).__name__}: expected one ModuleList of "
            f"length {n_layers}, found {len(candidates)}"
        )
    return candidates[0]


def _config_int(model: nn.Module, fields: tuple[str, ...], what: str) -> int:
    """The first of `fields` in the model's (text) config, whatever the family calls it."""
    config: Any = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for field in fields:
        value = getattr(config, field, None)
        if isinstance(value, int):
            return value
    raise SiteError(f"{type(model).__name__} has no {what} in its config")


def num_layers(model: nn.Module) -> int:
    """Depth of the model."""
    return _config_int(model, ("num_hidden_layers", "n_layer", "num_layers"), "layer count")


def hidden_size(model: nn.Module) -> int:
    """Width of the residual stream."""
    return _config_int(model, ("hidden_size", "n_embd", "d_model"), "hidden size")


def _child_named(block: nn.Module, words: tuple[str, ...], what: str) -> nn.Module:
    """The direct child of a block whose attribute name is one of `words` (first word wins)."""
    children = dict(block.named_children())
    for word in words:
        if word in children:
            return children[word]
    raise SiteError(
        f"cannot find the {what} module in {type(block).__name__}; its children are {', '.join(children)}"
    )


def site_module(model: nn.Module, site: Site) -> nn.Module:
    """The module whose input (resid_pre) or output (the other kinds) is the site's activation."""
    block = decoder_layers(model)[site.layer]
    if site.kind in ("resid_pre", "resid_post"):
        return block
    if site.kind == "mlp_out":
        return _child_named(block, _MLP_WORDS, "MLP")
    return _child_named(block, _ATTN_WORDS, "attention")


def valid_sites(model: nn.Module) -> list[str]:
    """Every site name the model offers, for error messages and the CLI's help."""
    return [f"layers.{i}.{kind}" for i in range(num_layers(model)) for kind in KINDS]

