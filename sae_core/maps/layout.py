"""Decoder directions -> 2-D positions (UMAP, cosine) -> clusters (HDBSCAN on the positions).

Clustering the 2-D layout rather than the 576-D directions makes the clusters the clumps a reader sees
on the map; HDBSCAN finds clumps of any shape and density and leaves features between clumps as noise
instead of forcing them into a family. Dead features never fire, so their directions say nothing (a
TopK SAE leaves them at their initialisation): they are left out of the layout and marked DEAD.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .config import MapConfig

NOISE = -1
"""Cluster number of a live feature HDBSCAN put in no cluster."""
DEAD = -2
"""Cluster number of a dead feature, which has no position."""


class MapError(ValueError):
    """Decoder directions a map cannot be made of: too few live features, NaN or infinite values."""


@dataclass(frozen=True)
class FeatureMap:
    """Per feature (length F): its position (NaN for dead features) and cluster (NOISE, DEAD or 0..n-1).

    Clusters are numbered by decreasing size, ties by their smallest feature index, so a map made again
    with the same seed numbers them the same way.
    """

    x_F: np.ndarray
    y_F: np.ndarray
    cluster_F: np.ndarray
    config: MapConfig

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_F.max(initial=-1)) + 1

    @property
    def n_noise(self) -> int:
        return int((self.cluster_F == NOISE).sum())

    @property
    def n_dead(self) -> int:
        return int((self.cluster_F == DEAD).sum())


def min_features(cfg: MapConfig) -> int:
    """The fewest live features a map is made of: UMAP needs more points than neighbours, HDBSCAN a cluster's worth."""
    return max(cfg.n_neighbors + 1, 2 * cfg.min_cluster_size)


def map_features(W_dec_FD: torch.Tensor | np.ndarray, alive_F: np.ndarray, cfg: MapConfig = MapConfig()) -> FeatureMap:
    """Lay out and cluster the live features' decoder directions; MapError for input a map cannot be made of."""
    directions = _checked_directions(W_dec_FD, alive_F, cfg)
    xy_A2 = _umap(directions, cfg)
    clusters_A = _hdbscan(xy_A2, cfg)
    n = len(alive_F)
    x_F, y_F = np.full(n, np.nan, dtype=np.float32), np.full(n, np.nan, dtype=np.float32)
    cluster_F = np.full(n, DEAD, dtype=np.int64)
    x_F[alive_F], y_F[alive_F], cluster_F[alive_F] = xy_A2[:, 0], xy_A2[:, 1], clusters_A
    return FeatureMap(x_F, y_F, cluster_F, cfg)


def _checked_directions(W_dec_FD: torch.Tensor | np.ndarray, alive_F: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """The live features' directions as float32, refusing what UMAP would fail on or silently garble."""
    W = W_dec_FD.detach().float().cpu().numpy() if isinstance(W_dec_FD, torch.Tensor) else np.asarray(W_dec_FD, np.float32)
    alive_F = np.asarray(alive_F, dtype=bool)
    if W.ndim != 2 or len(alive_F) != W.shape[0]:
        raise MapError(f"{len(alive_F)} features are marked live or dead but the decoder has shape {W.shape}")
    live = W[alive_F]
    if len(live) < min_features(cfg):
        raise MapError(f"a map needs at least {min_features(cfg)} live features (n_neighbors + 1, two clusters' "
                       f"worth); this SAE has {len(live)} of {len(alive_F)}")
    bad = np.flatnonzero(alive_F)[~np.isfinite(live).all(axis=1)]
    if len(bad):
        raise MapError(f"the decoder direction of feature {bad[0]} holds NaN or infinite values "
                       f"({len(bad)} features in all): cannot map it")
    zero = np.flatnonzero(alive_F)[np.linalg.norm(live, axis=1) == 0]
    if len(zero):
        raise MapError(f"the decoder direction of feature {zero[0]} is zero ({len(zero)} features in all): "
                       "cosine distance is undefined for it")
    return live


EXACT_NEIGHBOURS_UP_TO = 32768
"""Up to this many live features their cosine neighbours are found exactly by matmul; above it UMAP's own
approximate search (pynndescent) does it."""

NEIGHBOUR_ROWS = 2048
"""Rows of the similarity matrix held at once by the exact search (2048 x 32768 floats: 256 MiB at most)."""


def cosine_neighbours(directions_AD: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each direction's k nearest by cosine distance (1 - cosine), itself first: UMAP's precomputed_knn.

    pynndescent, UMAP's own search, compiles its numba kernels again in every process: on a 2-core AVX2 EPYC
    that was 60 s of the 79 s an 8192-feature map took, where the exact search is one matmul of a second.
    """
    x_AD = torch.from_numpy(directions_AD).float()
    x_AD = x_AD / x_AD.norm(dim=1, keepdim=True)
    indices, distances = [], []
    for start in range(0, len(x_AD), NEIGHBOUR_ROWS):
        sim_RA = x_AD[start:start + NEIGHBOUR_ROWS] @ x_AD.T
        rows = torch.arange(len(sim_RA))
        sim_RA[rows, rows + start] = 2.0  # above any cosine, so each point is its own first neighbour
        top = sim_RA.topk(k, dim=1)
        indices.append(top.indices)
        distances.append((1.0 - top.values).clamp_min(0.0))
    return torch.cat(indices).numpy(), torch.cat(distances).numpy()


def _umap(directions_AD: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """2-D UMAP layout under cosine distance; a seed makes umap-learn run on one thread, deterministically."""
    import umap  # imported here: numba compiles on import, seconds that only the map command should pay

    knn = cosine_neighbours(directions_AD, cfg.n_neighbors) if len(directions_AD) <= EXACT_NEIGHBOURS_UP_TO \
        else (None, None, None)
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                        n_epochs=cfg.n_epochs, random_state=cfg.seed, init="spectral", precomputed_knn=knn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state": the point of the seed
        return reducer.fit_transform(directions_AD).astype(np.float32)


def _hdbscan(xy_A2: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """HDBSCAN cluster of each point (NOISE for none), renumbered by decreasing size."""
    from sklearn.cluster import HDBSCAN

    raw = HDBSCAN(min_cluster_size=cfg.min_cluster_size, min_samples=cfg.min_samples,
                  max_cluster_size=cfg.max_cluster_size or None, copy=True).fit(xy_A2).labels_
    return renumbered(raw)


def renumbered(labels_A: np.ndarray) -> np.ndarray:
    """Cluster numbers 0..n-1 by decreasing size, ties by smallest member index; NOISE stays NOISE."""
    found = [c for c in np.unique(labels_A) if c != NOISE]
    order = sorted(found, key=lambda c: (-int((labels_A == c).sum()), int(np.flatnonzero(labels_A == c)[0])))
    out = np.full(len(labels_A), NOISE, dtype=np.int64)
    for new, old in enumerate(order):
        out[labels_A == old] = new
    return out
