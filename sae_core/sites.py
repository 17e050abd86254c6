"""Hook-site names and the modules they live on, found from a model's structure.

One naming scheme for every architecture: `layers.{i}.resid_pre`, `layers.{i}.resid_post`,
`layers.{i}.attn_out`, `layers.{i}.mlp_in` and `layers.{i}.mlp_out`. TransformerLens/SAELens names such as
`blocks.{i}.hook_resid_post` are accepted as aliases.

`mlp_in` is what the MLP receives: the residual stream after attention, through the block's pre-MLP norm
(TransformerLens's `ln2.hook_normalized`, circuit-tracer's `mlp.hook_in`). With `mlp_out` it makes the
(input, output) pairs a transcoder learns from; `parse_sites` takes `layers.N.mlp` for both, and a layer
range `layers.A-B.kind` for the kind at every layer from A to B.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

KINDS = ("resid_pre", "resid_post", "mlp_in", "mlp_out", "attn_out")
FORWARD_ORDER = ("resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post")
"""The kinds of one layer in the order a forward pass computes them."""
INPUT_KINDS = ("resid_pre", "mlp_in")
"""Kinds read from a module's input (the block's, the MLP's) rather than its output."""
MLP_PAIR = "mlp"
"""The kind `parse_sites` expands to an MLP's input and output (`mlp_in`, `mlp_out`)."""
_HOOK_NAMES = {"mlp_in": "ln2.hook_normalized"}
"""TransformerLens names that are not `hook_{kind}` (its `hook_mlp_in` is the MLP's input before the norm)."""

_KIND = "resid_pre|resid_post|mlp_in|mlp_out|attn_out"
_CANONICAL = re.compile(rf"^layers\.(\d+)\.({_KIND})$")
_ALIAS = re.compile(r"^blocks\.(\d+)\.(?:hook_(resid_pre|resid_post|mlp_out|attn_out)|(ln2\.hook_normalized))$")
_GROUP = re.compile(rf"^layers\.(\d+)(?:-(\d+))?\.({_KIND}|{MLP_PAIR})$")

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
        return f"blocks.{self.layer}.{_HOOK_NAMES.get(self.kind, f'hook_{self.kind}')}"

    @property
    def reads_input(self) -> bool:
        """Whether the activation is its module's input (a pre-hook reads it) rather than its output."""
        return self.kind in INPUT_KINDS

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
    match = _CANONICAL.match(name.strip())
    alias = _ALIAS.match(name.strip())
    if match is not None:
        site = Site(layer=int(match.group(1)), kind=match.group(2))
    elif alias is not None:
        site = Site(layer=int(alias.group(1)), kind=alias.group(2) or "mlp_in")
    else:
        raise SiteError(
            f"unknown site {name!r}; valid forms are layers.N.{{{','.join(KINDS)}}}, "
            "blocks.N.hook_{resid_pre,resid_post,mlp_out,attn_out} or blocks.N.ln2.hook_normalized"
        )
    return site if n_layers is None else site.within(n_layers)


def _expand(name: str) -> list[str]:
    """A name of `parse_sites`'s list as site names: `layers.N.mlp` is two, `layers.A-B.kind` one per layer."""
    match = _GROUP.match(name.strip())
    if match is None:
        return [name]
    first, last, kind = int(match.group(1)), int(match.group(2) or match.group(1)), match.group(3)
    if last < first:
        raise SiteError(f"layer range {first}-{last} in {name.strip()!r} runs backwards")
    kinds = ("mlp_in", "mlp_out") if kind == MLP_PAIR else (kind,)
    return [f"layers.{layer}.{k}" for layer in range(first, last + 1) for k in kinds]


def parse_sites(names: str, n_layers: int | None = None) -> tuple[Site, ...]:
    """One site name or several, comma-separated, in forward order (the order attribution walks them).

    `layers.N.mlp` names the MLP's input and output, `layers.A-B.kind` the kind at layers A to B (both ends).
    A site named twice (also as its SAELens alias) is an error rather than a second copy of its activations.
    """
    expanded = [site for name in names.split(",") for site in _expand(name)] if names.strip() else []
    sites = [parse_site(name, n_layers) for name in expanded]
    if not sites:
        raise SiteError("no site given; name one, or several separated by commas")
    twice = sorted({site.name for site in sites if sites.count(site) > 1})
    if twice:
        raise SiteError(f"site {', '.join(twice)} is named more than once")
    return tuple(sorted(sites, key=lambda site: site.depth))


def mlp_pairs(sites: Sequence[Site]) -> list[tuple[Site, Site]]:
    """Each layer's (MLP input, MLP output) among `sites`, by layer: the pairs a transcoder learns from.

    Any other site, or an MLP's input without its output (or the reverse), is an error naming it.
    """
    others = [site.name for site in sites if site.kind not in ("mlp_in", "mlp_out")]
    if others:
        raise SiteError(f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not an MLP's input or output; "
                        "a transcoder learns from (layers.N.mlp_in, layers.N.mlp_out) pairs (harvest layers.N.mlp)")
    layers = sorted({site.layer for site in sites})
    halves = [f"layers.{layer}.{kind}" for layer in layers for kind in ("mlp_in", "mlp_out")
              if Site(layer, kind) not in sites]
    if halves:
        raise SiteError(f"{', '.join(halves)} missing: a transcoder needs an MLP's input and output at each layer "
                        "(harvest layers.N.mlp)")
    return [(Site(layer, "mlp_in"), Site(layer, "mlp_out")) for layer in layers]


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
    """The module whose input (resid_pre, mlp_in) or output (the other kinds) is the site's activation."""
    block = decoder_layers(model)[site.layer]
    if site.kind in ("resid_pre", "resid_post"):
        return block
    if site.kind in ("mlp_in", "mlp_out"):
        return _child_named(block, _MLP_WORDS, "MLP")
    return _child_named(block, _ATTN_WORDS, "attention")


def valid_sites(model: nn.Module) -> list[str]:
    """Every site name the model offers, for error messages and the CLI's help."""
    return [f"layers.{i}.{kind}" for i in range(num_layers(model)) for kind in KINDS]

