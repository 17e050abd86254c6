"""The feature map: UMAP layout and HDBSCAN clusters of decoder directions, and the input it refuses."""

import numpy as np
import pytest
import torch

from sae_core.maps import DEAD, NOISE, MapConfig, MapError, layout, map_features, summarise_clusters
from sae_core.maps.layout import cosine_neighbours, renumbered

CFG = MapConfig(n_epochs=100)


def families(n_families=4, per_family=30, d=24, spread=0.05, seed=0):
    """Directions in tight, well-separated families; feature i belongs to family i % n_families."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_families, d, generator=gen)
    index = torch.arange(n_families * per_family) % n_families
    return centres[index] + spread * torch.randn(len(index), d, generator=gen), index.numpy()


def test_families_of_directions_become_clusters_and_dead_features_are_marked():
    W, family = families()
    alive = np.ones(len(family), bool)
    alive[[0, 5, 77]] = False
    fmap = map_features(W, alive, CFG)
    assert fmap.n_dead == 3 and (fmap.cluster_F[~alive] == DEAD).all()
    assert np.isnan(fmap.x_F[~alive]).all() and np.isfinite(fmap.x_F[alive]).all()
    assert fmap.n_clusters == 4
    clustered = alive & (fmap.cluster_F >= 0)
    assert clustered.sum() >= 0.9 * alive.sum()
    for c in range(4):  # each cluster is one family
        assert len(set(family[fmap.cluster_F == c])) == 1
    sizes = [int((fmap.cluster_F == c).sum()) for c in range(4)]
    assert sizes == sorted(sizes, reverse=True)


def test_the_same_seed_gives_the_same_map_and_another_seed_another_layout():
    W, family = families(seed=1)
    alive = np.ones(len(family), bool)
    first, again = map_features(W, alive, CFG), map_features(W, alive, CFG)
    assert np.array_equal(first.x_F, again.x_F) and np.array_equal(first.cluster_F, again.cluster_F)
    other = map_features(W, alive, MapConfig(n_epochs=100, seed=1))
    assert not np.array_equal(first.x_F, other.x_F)


@pytest.mark.parametrize("n_live", [3, 15])
def test_too_few_live_features_is_a_clear_error(n_live):
    W, family = families()
    alive = np.zeros(len(family), bool)
    alive[:n_live] = True
    with pytest.raises(MapError, match=f"at least 16 live features .*; this SAE has {n_live} of 120"):
        map_features(W, alive, CFG)


def test_nan_or_zero_directions_are_named():
    W, family = families()
    W[7, 3] = float("nan")
    with pytest.raises(MapError, match="feature 7 holds NaN or infinite values"):
        map_features(W, np.ones(len(family), bool), CFG)
    W[7] = 0.0
    with pytest.raises(MapError, match="feature 7 is zero"):
        map_features(W, np.ones(len(family), bool), CFG)
    alive = np.ones(len(family), bool)
    alive[7] = False  # a dead feature's direction is never read
    assert map_features(W, alive, CFG).cluster_F[7] == DEAD


def test_no_cluster_outgrows_the_cap_and_families_stay_whole_under_it():
    W, family = families(n_families=2, per_family=60, spread=0.3)
    alive = np.ones(len(family), bool)
    capped = map_features(W, alive, MapConfig(n_epochs=100, max_cluster_size=40))
    sizes = [int((capped.cluster_F == c).sum()) for c in range(capped.n_clusters)]
    assert capped.n_clusters > 2 and max(sizes) <= 40
    uncapped = map_features(W, alive, MapConfig(n_epochs=100, max_cluster_size=0))
    assert uncapped.n_clusters == 2


def test_clusters_are_numbered_by_size_then_first_member():
    assert renumbered(np.array([5, 5, -1, 2, 2, 2, 9, 9])).tolist() == [1, 1, NOISE, 0, 0, 0, 2, 2]


def test_a_summary_counts_each_members_top_tokens_once():
    W, family = families()
    fmap = map_features(W, np.ones(len(family), bool), CFG)
    members = np.flatnonzero(fmap.cluster_F == 0)
    tokens = {int(i): ["def", "def", "class"] for i in members[:3]} | {int(members[3]): ["", "return"]}
    [first, *_] = summarise_clusters(fmap, tokens)
    assert first.cluster == 0 and first.size == len(members)
    assert first.top_tokens == [("def", 3), ("class", 3), ("return", 1)]
    assert first.x == pytest.approx(float(fmap.x_F[members].mean()))


@pytest.mark.parametrize("rows", [2048, 7])
def test_exact_neighbours_are_the_k_most_cosine_similar_each_point_first(monkeypatch, rows):
    monkeypatch.setattr(layout, "NEIGHBOUR_ROWS", rows)  # 7: the similarity matrix a few rows at a time
    x = np.random.default_rng(0).standard_normal((60, 5)).astype(np.float32) * 3
    x[7] = x[3] * 2  # a point at cosine distance 0 from another stays behind itself
    indices, distances = cosine_neighbours(x, 6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    np.fill_diagonal(distance, -1)
    assert (indices[:, 0] == np.arange(60)).all() and np.allclose(distances[:, 0], 0, atol=1e-6)
    assert indices[3, 1] == 7 and indices[7, 1] == 3
    for i in range(60):
        np.testing.assert_allclose(distances[i, 1:], np.clip(distance[i, indices[i, 1:]], 0, None), atol=1e-5)
        np.testing.assert_allclose(np.sort(distances[i]), np.clip(np.sort(distance[i])[:6], 0, None), atol=1e-5)
