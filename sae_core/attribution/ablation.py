"""Exact ablation: put one node at its baseline and run the model again, many nodes to a batch.

This is what the gradient estimates approximate; comparing the two on the largest nodes says how far the
linear picture can be trusted for this prompt (Marks et al. 2024, section 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from .dictionaries import Dictionary
from .inputs import Inputs
from .nodes import EMBED_LAYER, Nodes
from .states import Rewire, States, rewired


def _adder(delta_BTD: torch.Tensor | None) -> Rewire | None:
    return None if delta_BTD is None else (lambda x: x + delta_BTD.to(x.dtype))


@torch.no_grad()
def ablate(model: PreTrainedModel, dicts: Sequence[Dictionary], inputs: Inputs, nodes: Nodes, which: Sequence[int],
           clean: States, patch: States, batch_rows: int) -> torch.Tensor:
    """metric(clean) - metric(node at its baseline) for each node in `which`, measured exactly.

    Each batch carries an untouched row too, so the difference is taken between rows of one forward.
    """
    out = []
    width = clean.embed_TD.shape[-1]
    for start in range(0, len(which), batch_rows):
        chunk = which[start:start + batch_rows]
        rows = len(chunk) + 1
        deltas: dict[int, torch.Tensor] = {}
        for row, n in enumerate(chunk, start=1):
            layer = int(nodes.layer_N[n])
            delta_BTD = deltas.setdefault(layer, torch.zeros(rows, len(inputs.ids_T), width))
            delta_BTD[row, int(nodes.pos_N[n])] += nodes.delta(n, clean, patch, dicts)
        sites = [_adder(deltas.get(i)) for i in range(len(dicts))]
        with rewired(model, dicts, _adder(deltas.get(EMBED_LAYER)), sites):
            metric_B = inputs.metric(model, inputs.ids_T[None].expand(rows, -1))
        out.append(metric_B[0] - metric_B[1:])
    return torch.cat(out) if out else torch.zeros(0)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks from 0, ties given their average rank."""
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for value in x.unique():
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation; None when it is undefined (fewer than two values, or one side constant)."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a) - (len(a) - 1) / 2, _ranks(b) - (len(b) - 1) / 2
    scale = ra.norm() * rb.norm()
    return None if scale == 0 else float((ra * rb).sum() / scale)
