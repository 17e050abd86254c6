"""Every node of one prompt and its estimated effect on the metric, as parallel tensors.

Nodes are the active features (site, position, index), one SAE-error node per (site, position) and the
token embeddings, at positions up to the measured one (later positions cannot reach it). A node's effect is
gradient . (clean - baseline) ~ metric(clean) - metric(node at its baseline): positive means the node
pushes the metric up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .dictionaries import Dictionary
from .states import States

FEATURE, ERROR, EMBEDDING = 0, 1, 2
KIND_NAMES = ("feature", "error", "embedding")
EMBED_LAYER = -1
"""The layer index of embedding nodes; sites are 0.. in depth order."""


@dataclass(frozen=True)
class Nodes:
    """Nodes as tensors [N]: features site by site, then error nodes, then embeddings."""

    kind_N: torch.Tensor
    layer_N: torch.Tensor
    """Site index in depth order, EMBED_LAYER for embeddings."""
    pos_N: torch.Tensor
    feature_N: torch.Tensor
    """Feature index; -1 for error and embedding nodes."""
    activation_N: torch.Tensor
    """A feature's activation; the vector norm of an error or an embedding."""
    effect_N: torch.Tensor

    def __len__(self) -> int:
        return len(self.kind_N)

    def delta(self, n: int, clean: States, patch: States, dicts: Sequence[Dictionary]) -> torch.Tensor:
        """The change [D] that puts node n at its baseline, added to its layer's activation at its position."""
        kind, layer, pos, feature = (int(t[n]) for t in (self.kind_N, self.layer_N, self.pos_N, self.feature_N))
        if kind == EMBEDDING:
            return patch.embed_TD[pos] - clean.embed_TD[pos]
        if kind == ERROR:
            return patch.sites[layer].err_TD[pos] - clean.sites[layer].err_TD[pos]
        change = patch.sites[layer].f_TF[pos, feature] - clean.sites[layer].f_TF[pos, feature]
        return change * dicts[layer].sae.W_dec[feature]


def _vector_nodes(kind: int, layer: int, clean_TD: torch.Tensor, patch_TD: torch.Tensor, grad_TD: torch.Tensor,
                  first: int, upto: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor]:
    """One node per position of a vector-valued layer (errors, embeddings)."""
    pos = torch.arange(first, upto + 1)
    effect = (grad_TD[pos] * (clean_TD[pos] - patch_TD[pos])).sum(-1)
    fill = torch.full_like(pos, kind)
    return fill, torch.full_like(pos, layer), pos, torch.full_like(pos, -1), clean_TD[pos].norm(dim=-1), effect


def build_nodes(clean: States, patch: States, grads: States, position: int, first: int = 0) -> Nodes:
    """Every node from position `first` up to `position` with its effect gradient . (clean - patch)."""
    parts = []
    for layer, (c, p, g) in enumerate(zip(clean.sites, patch.sites, grads.sites, strict=True)):
        active_TF = (c.f_TF != 0) | (p.f_TF != 0)
        active_TF[position + 1:] = False
        active_TF[:first] = False
        pos, feature = active_TF.nonzero(as_tuple=True)
        effect = g.f_TF[pos, feature] * (c.f_TF[pos, feature] - p.f_TF[pos, feature])
        parts.append((torch.full_like(pos, FEATURE), torch.full_like(pos, layer), pos, feature, c.f_TF[pos, feature],
                      effect))
    for layer, (c, p, g) in enumerate(zip(clean.sites, patch.sites, grads.sites, strict=True)):
        parts.append(_vector_nodes(ERROR, layer, c.err_TD, p.err_TD, g.err_TD, first, position))
    parts.append(_vector_nodes(EMBEDDING, EMBED_LAYER, clean.embed_TD, patch.embed_TD, grads.embed_TD, first, position))
    columns = [torch.cat(column) for column in zip(*parts, strict=True)]
    return Nodes(*(c.detach() for c in columns))
