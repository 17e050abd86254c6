"""Reading a recorded activation histogram on other bins than the log-spaced grid it was counted on.

Recording counts every non-zero activation on one shared log-spaced grid (`HIST_EDGES`, 12 bins a decade),
because a feature's max is unknown until the pass ends. Tools that draw equal-width bars over
[lowest activation, max] (Neuronpedia), or report the share of tokens inside an equal-width interval of the
max, need counts on other edges. Those are estimated here by spreading each grid bin's count uniformly over
its span (cut at the feature's max, which no activation exceeds): a count is exact to within one grid bin,
a factor of 10^(1/12) = 1.21 in activation.
"""

from __future__ import annotations

import itertools


def mass_between(edges: list[float], counts: list[int], low: float, high: float, top: float) -> float:
    """Estimated number of counted activations in [low, high), none above `top` (the feature's max)."""
    mass = 0.0
    for (lo, hi), count in zip(itertools.pairwise(edges), counts, strict=True):
        hi = min(hi, top)
        if count == 0:
            continue
        if hi <= lo:  # rounding put the max on this bin's lower edge: its count sits at that point
            mass += count if low <= lo < high else 0
            continue
        overlap = min(hi, high) - max(lo, low)
        if overlap > 0:
            mass += count * overlap / (hi - lo)
    return mass


def equal_width(edges: list[float], counts: list[int], top: float, n_bins: int) -> tuple[list[float], list[int]]:
    """(bin centres, whole counts) on `n_bins` equal-width bins from the lowest grid edge to `top`.

    The counts are rounded by largest remainder, so they still add up to the recorded total.
    """
    if not counts or n_bins <= 0:
        return [], []
    low = edges[0]
    top = max(top, low)
    width = (top - low) / n_bins or 1.0
    masses = [0.0] * n_bins
    for (lo, hi), count in zip(itertools.pairwise(edges), counts, strict=True):
        hi = min(hi, top)
        if count == 0:
            continue
        first, last = (min(int((v - low) / width), n_bins - 1) for v in (lo, hi))
        if hi <= lo or first == last:
            masses[first] += count
            continue
        for i in range(first, last + 1):
            overlap = min(hi, low + (i + 1) * width) - max(lo, low + i * width)
            masses[i] += count * max(overlap, 0.0) / (hi - lo)
    return [low + (i + 0.5) * width for i in range(n_bins)], _whole(masses, sum(counts))


def _whole(masses: list[float], total: int) -> list[int]:
    """Round non-negative masses to integers that sum to `total` (largest remainder)."""
    floors = [int(m) for m in masses]
    short = total - sum(floors)
    by_remainder = sorted(range(len(masses)), key=lambda i: masses[i] - floors[i], reverse=True)
    for i in by_remainder[:max(short, 0)]:
        floors[i] += 1
    return floors
