"""How a feature map is laid out and clustered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class MapConfig:
    """Settings of the UMAP layout and the HDBSCAN clustering of an SAE's decoder directions."""

    n_neighbors: int = 15
    """UMAP neighbourhood size: how local the layout is (umap-learn's default)."""
    min_dist: float = 0.05
    """UMAP minimum distance between points: small packs families into tight, separable clumps."""
    n_epochs: int = 200
    """UMAP optimisation epochs (umap-learn uses 200 above 10k points, 500 below; 200 halves the time)."""
    min_cluster_size: int = 8
    """HDBSCAN: the smallest group of features called a cluster."""
    min_samples: int = 4
    """HDBSCAN: how conservative the clustering is (larger leaves more features as noise)."""
    max_cluster_size: int = 256
    """HDBSCAN: the largest cluster it may keep (0: no cap); a bigger clump is split into its sub-clusters.
    Uncapped, it merged the demo's layer-9 map into 2 clusters (8111 and 34 features), where the cap gives 277,
    as at layers 3 and 6 (300 and 275), where it changes little."""
    seed: int = 0
    """Seeds UMAP's initialisation and sampling: the same seed gives the same map."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
