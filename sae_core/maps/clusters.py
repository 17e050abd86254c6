"""Per-cluster summaries: how big each cluster is, where it sits and which top tokens its members share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .layout import FeatureMap

TOP_TOKENS = 10
"""Most common member top tokens kept per cluster."""


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster of a map."""

    cluster: int
    size: int
    x: float
    y: float
    """Centroid of the members' positions, where the map writes the cluster's name."""
    top_tokens: list[tuple[str, int]]
    """The members' most common top tokens, with how many members have each among their top tokens."""


def summarise_clusters(fmap: FeatureMap, top_tokens: Mapping[int, Sequence[str]], n: int = TOP_TOKENS
                       ) -> list[ClusterSummary]:
    """A summary per cluster; `top_tokens[i]` are feature i's top-activating tokens (each counted once per member)."""
    summaries = []
    for c in range(fmap.n_clusters):
        members = np.flatnonzero(fmap.cluster_F == c)
        counts = Counter(t for i in members.tolist() for t in dict.fromkeys(top_tokens.get(i, ())) if t)
        summaries.append(ClusterSummary(c, len(members), float(fmap.x_F[members].mean()),
                                        float(fmap.y_F[members].mean()), counts.most_common(n)))
    return summaries
