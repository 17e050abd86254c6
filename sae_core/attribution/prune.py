"""Pruning by cumulative share, circuit-tracer's rule (node 0.8, edge 0.98) on our effects and weights.

Each node or edge gets the share of the total |score| held by those larger than it; keeping the ones whose
share is below a threshold keeps the fewest that carry that share. Storing the shares lets a page move the
thresholds without recomputing anything.
"""

from __future__ import annotations

import torch


def shares(scores: torch.Tensor) -> torch.Tensor:
    """For each score, the share of the total |score| held by strictly earlier ones in descending order."""
    size = scores.abs().double()
    order = size.argsort(descending=True)
    before = size[order].cumsum(0) - size[order]
    out = torch.zeros_like(size)
    total = size.sum()
    if total > 0:
        out[order] = before / total
    return out


def candidates(effect_N: torch.Tensor, eligible_N: torch.Tensor, threshold: float, cap: int) -> torch.Tensor:
    """Indices of eligible nodes carrying `threshold` of the eligible |effect|, at most `cap`, largest first."""
    index = eligible_N.nonzero()[:, 0]
    share = shares(effect_N[index])
    keep = index[share < threshold]
    return keep[effect_N[keep].abs().argsort(descending=True)[:cap]]
