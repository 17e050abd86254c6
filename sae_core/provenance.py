"""Where a set of activations came from, made once at harvest (or stream) and carried into the SAE's config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .sites import Site, SiteError, parse_site


@dataclass(frozen=True)
class Provenance:
    """The model, site, corpus and context length behind some activations (each None where unknown)."""

    model: str | None = None
    """Display name of the model (the loaded model's name, not the spec it was loaded from)."""
    site: Site | None = None
    """The hook site read, when saescope can name it."""
    dataset: str | None = None
    """The corpus the contexts were cut from."""
    context_len: int | None = None
    """Tokens per context, BOS included."""
    foreign_hook: str | None = None
    """Another tool's hook name that is no saescope site, kept so that it is written back as it came."""

    @property
    def hook_name(self) -> str | None:
        """The TransformerLens-style site name SAELens records."""
        return self.site.hook_name if self.site else self.foreign_hook

    @classmethod
    def of_hook(cls, hook_name: str | None, **fields: Any) -> Provenance:
        """Provenance whose site is given by name (saescope's or SAELens's), kept verbatim when it does not parse."""
        try:
            site = parse_site(hook_name) if hook_name else None
        except SiteError:
            return cls(foreign_hook=hook_name, **fields)
        return cls(site=site, **fields)

    def to_cfg(self) -> dict[str, Any]:
        """The fields as SAELens and saescope's cfg.json spell them (also the store's config column)."""
        return {"model_name": self.model, "hook_name": self.hook_name, "site": self.site.name if self.site else None,
                "dataset": self.dataset, "context_size": self.context_len}

    @classmethod
    def from_cfg(cls, values: Mapping[str, Any]) -> Provenance:
        """Read back what `to_cfg` wrote."""
        return cls.of_hook(values.get("site") or values.get("hook_name"), model=values.get("model_name"),
                           dataset=values.get("dataset"), context_len=values.get("context_size"))
