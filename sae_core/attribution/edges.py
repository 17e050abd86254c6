"""Edges between nodes of consecutive layers (embeddings -> first site -> ... -> last site -> metric).

The weight of u -> d is (d metric / d d) (d d / d u) (clean - baseline)_u: u's effect on the metric through
d, from one backward per downstream node (Marks et al. 2024's edge attribution). Where each site is a cut of
the model (residual-stream sites), a node's outgoing weights to all nodes of the next layer sum to its
attribution-patching effect, errors included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..hooks import StopForward
from .dictionaries import Dictionary
from .inputs import Inputs
from .nodes import EMBED_LAYER, EMBEDDING, ERROR, FEATURE, Nodes
from .states import Rewire, States, decompose, replacing, rewired

METRIC = -1
"""The target index of an edge into the metric."""


@dataclass(frozen=True)
class Edges:
    """Edges as tensors [E]: node indices (METRIC for the metric) and weights."""

    source_E: torch.Tensor
    target_E: torch.Tensor
    weight_E: torch.Tensor


@dataclass(frozen=True)
class _Layers:
    """What the edge passes read: the nodes and each layer's clean values, baselines and metric gradients."""

    dicts: Sequence[Dictionary]
    nodes: Nodes
    clean: States
    patch: States
    grads: States


def _leaves(layers: _Layers, up: int, rows: int) -> tuple[list[torch.Tensor], Rewire | None, list[Rewire | None]]:
    """Leaves holding the upstream layer's clean values, one copy per row, and the hooks that feed them in."""
    sites: list[Rewire | None] = [None] * len(layers.dicts)
    if up == EMBED_LAYER:
        e = layers.clean.embed_TD.expand(rows, -1, -1).clone().requires_grad_(True)
        return [e], (lambda _x: e), sites
    state, sae = layers.clean.sites[up], layers.dicts[up].sae
    f = state.f_TF.expand(rows, -1, -1).clone().requires_grad_(True)
    err = state.err_TD.expand(rows, -1, -1).clone().requires_grad_(True)
    sites[up] = replacing(sae, f, err)
    return [f, err], None, sites


def _seed(layers: _Layers, down: int, x_BTD: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """Sum over rows of each row's target node times its metric gradient (so one backward serves all rows)."""
    nodes, g = layers.nodes, layers.grads.sites[down]
    f_BTF, err_BTD = decompose(layers.dicts[down].sae, x_BTD)
    t = torch.tensor(targets)
    rows = torch.arange(len(targets))
    is_feature = nodes.kind_N[t] == FEATURE
    r, pos, feat = rows[is_feature], nodes.pos_N[t][is_feature], nodes.feature_N[t][is_feature]
    seed = (f_BTF[r, pos, feat] * g.f_TF[pos, feat]).sum()
    r, pos = rows[~is_feature], nodes.pos_N[t][~is_feature]
    return seed + (err_BTD[r, pos] * g.err_TD[pos]).sum()


def _source_weights(layers: _Layers, up: int, leaves: list[torch.Tensor], sources: torch.Tensor) -> torch.Tensor:
    """Weights [R, S] from each source node into each row's target: gradient . (clean - baseline)."""
    nodes = layers.nodes
    pos, feat, kind = nodes.pos_N[sources], nodes.feature_N[sources], nodes.kind_N[sources]
    if up == EMBED_LAYER:
        change_TD = layers.clean.embed_TD - layers.patch.embed_TD
        return (leaves[0].grad[:, pos] * change_TD[pos]).sum(-1)  # type: ignore[index]
    clean, patch = layers.clean.sites[up], layers.patch.sites[up]
    f_grad, err_grad = leaves[0].grad, leaves[1].grad
    assert f_grad is not None and err_grad is not None
    out = torch.zeros(f_grad.shape[0], len(sources))
    is_feature = kind == FEATURE
    p, i = pos[is_feature], feat[is_feature]
    out[:, is_feature] = f_grad[:, p, i] * (clean.f_TF[p, i] - patch.f_TF[p, i])
    p = pos[kind == ERROR]
    out[:, kind == ERROR] = (err_grad[:, p] * (clean.err_TD[p] - patch.err_TD[p])).sum(-1)
    return out


def _chunk(model: PreTrainedModel, inputs: Inputs, layers: _Layers, down: int, targets: Sequence[int],
           sources: torch.Tensor) -> torch.Tensor:
    """Weights [R, S] into one batch of targets at site `down` from the sources one layer up."""
    up = down - 1 if down > 0 else EMBED_LAYER
    rows = len(targets)
    leaves, embed, sites = _leaves(layers, up, rows)
    seen: list[torch.Tensor] = []

    def stop(x: torch.Tensor) -> None:
        seen.append(x)
        raise StopForward

    sites[down] = stop
    with torch.enable_grad():
        try:
            with rewired(model, layers.dicts, embed, sites):
                model(input_ids=inputs.ids_T[None].expand(rows, -1), use_cache=False)
        except StopForward:
            pass
        _seed(layers, down, seen[0], targets).backward()
    return _source_weights(layers, up, leaves, sources)


def compute_edges(model: PreTrainedModel, dicts: Sequence[Dictionary], inputs: Inputs, nodes: Nodes,
                  kept: torch.Tensor, states: tuple[States, States, States], batch_rows: int,
                  progress: Callable[[float], None] = lambda _f: None) -> Edges:
    """Edges among the `kept` node indices (all embeddings are sources), plus last-site nodes -> metric."""
    clean, patch, grads = states
    layers = _Layers(dicts, nodes, clean, patch, grads)
    is_embed = nodes.kind_N == EMBEDDING
    pool = torch.cat([kept, is_embed.nonzero()[:, 0]]).unique()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    total = max(1, int((nodes.layer_N[pool] >= 0).sum()))
    done = 0
    for down in range(len(dicts)):
        up = down - 1 if down > 0 else EMBED_LAYER
        targets = pool[nodes.layer_N[pool] == down].tolist()
        sources = pool[nodes.layer_N[pool] == up]
        for start in range(0, len(targets), batch_rows):
            chunk = targets[start:start + batch_rows]
            if len(sources):
                w_RS = _chunk(model, inputs, layers, down, chunk, sources).detach()
                r, s = w_RS.nonzero(as_tuple=True)
                parts.append((sources[s], torch.tensor(chunk)[r], w_RS[r, s]))
            done += len(chunk)
            progress(done / total)
    last = pool[nodes.layer_N[pool] == len(dicts) - 1]
    parts.append((last, torch.full_like(last, METRIC), nodes.effect_N[last]))
    return Edges(*(torch.cat(column) for column in zip(*parts, strict=True)))
