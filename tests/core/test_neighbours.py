"""Nearest features by decoder cosine: the exact search against brute force, the approximate (IVF) one against it."""

import pytest
import torch

from sae_core.records import RecordConfig
from sae_core.records.neighbours import (
    EXACT_UP_TO,
    approximate_neighbours,
    exact_neighbours,
    nearest_features,
    resolve_search,
)

RECALL_FLOOR = 0.5
"""Recall@10 on 10,000 random 64-d rows at the default nprobe measured 0.59 (bench/neighbours.py --features 10000
--d-in 64): a floor below it that a broken probe list, merge or symmetric update would fall through."""


def random_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def brute_cosines(W: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(W[:, None], W[None], dim=-1)
    return cos.fill_diagonal_(-2)


@pytest.fixture(scope="module")
def random_tables():
    W = random_rows(10_000, 64)
    return W, exact_neighbours(W, 10), approximate_neighbours(W, 10)


def test_nearest_features_match_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr("sae_core.records.neighbours.CHUNK", 7)
    W = random_rows(30, 8)
    table = nearest_features(W, 4)
    assert torch.equal(table.index_FK, brute_cosines(W).topk(4, dim=1).indices)


def test_exact_neighbours_of_some_rows_are_those_rows_of_the_whole_table():
    W, rows = random_rows(300, 16), torch.tensor([5, 0, 299, 17])
    whole, some = exact_neighbours(W, 6), exact_neighbours(W, 6, rows)
    assert torch.equal(some.index_FK, whole.index_FK[rows])
    assert torch.equal(some.value_FK, whole.value_FK[rows])


def test_approximate_search_finds_planted_near_duplicates():
    W = random_rows(4000, 64)
    pairs = torch.randperm(4000, generator=torch.Generator().manual_seed(1))[:400].view(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    W[b] = W[a] + 0.3 * W[b]  # cosine about 0.96; random rows' nearest sit near 0.45
    table = approximate_neighbours(W, 10)
    assert torch.equal(table.index_FK[a, 0], b)
    assert torch.equal(table.index_FK[b, 0], a)


def test_approximate_recall_against_exact_search_is_above_the_measured_floor(random_tables):
    _, exact, approx = random_tables
    hits = (approx.index_FK[:, :, None] == exact.index_FK[:, None, :]).any(dim=1)
    assert hits.float().mean() >= RECALL_FLOOR


def test_approximate_values_are_true_cosines_sorted_without_self(random_tables):
    W, _, approx = random_tables
    unit = torch.nn.functional.normalize(W, dim=1)
    true = (unit[:, None, :] * unit[approx.index_FK]).sum(-1)
    assert torch.allclose(approx.value_FK, true, atol=1e-6)
    assert (approx.index_FK != torch.arange(len(W))[:, None]).all()
    assert (approx.value_FK[:, :-1] >= approx.value_FK[:, 1:]).all()
    assert all(len(set(row)) == 10 for row in approx.index_FK.tolist())


def test_approximate_search_is_deterministic_given_its_seed():
    W = random_rows(2000, 16)
    first, again, other = (approximate_neighbours(W, 5, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.index_FK, again.index_FK) and torch.equal(first.value_FK, again.value_FK)
    assert not torch.equal(first.index_FK, other.index_FK)


def test_rows_whose_probed_cells_hold_too_few_others_are_searched_exactly():
    W = random_rows(60, 8)  # 8 cells of about 8 features: one probed cell cannot hold 10 others
    exact, approx = exact_neighbours(W, 10), approximate_neighbours(W, 10, nprobe=1)
    assert torch.equal(approx.index_FK, exact.index_FK)


def test_auto_is_exact_up_to_the_threshold_and_approximate_above():
    assert resolve_search("auto", EXACT_UP_TO) == "exact"
    assert resolve_search("auto", EXACT_UP_TO + 1) == "approximate"
    assert resolve_search("approximate", 10) == "approximate"
    assert resolve_search("exact", EXACT_UP_TO + 1) == "exact"


def test_a_recording_config_names_the_search_it_ran():
    cfg = RecordConfig()
    assert cfg.neighbours == "auto"
    assert cfg.for_width(EXACT_UP_TO).neighbours == "exact"
    assert cfg.for_width(EXACT_UP_TO + 1).neighbours == "approximate"
    assert RecordConfig(neighbours="exact").for_width(EXACT_UP_TO + 1).neighbours == "exact"

