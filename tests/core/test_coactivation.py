"""Co-activation: exact Jaccard from sparse pair counts, against a dense brute force on small cases."""

import pytest
import torch

from sae_core.records import coactivation
from sae_core.records.coactivation import CoactivationCounter


def brute_jaccard(fires_NF: torch.Tensor) -> torch.Tensor:
    """Dense Jaccard of every pair of features (a feature with itself: -1)."""
    f = fires_NF.double()
    both = f.T @ f
    count = f.sum(0)
    jaccard = both / (count[:, None] + count[None, :] - both).clamp_min(1)
    return jaccard.fill_diagonal_(-1)


def assert_top_matches(table, jaccard: torch.Tensor, k: int) -> None:
    """Each feature's kept scores are the k best of the brute force, and each kept partner has its score."""
    for i in range(jaccard.shape[0]):
        best = jaccard[i].topk(k).values
        best = best[best > 0]
        kept = table.index_FK[i] >= 0
        torch.testing.assert_close(table.value_FK[i][kept].double(), best, rtol=1e-6, atol=0)
        torch.testing.assert_close(jaccard[i, table.index_FK[i][kept]], best, rtol=1e-6, atol=0)
        assert (table.index_FK[i][~kept] == -1).all() and (table.value_FK[i][~kept] == 0).all()


@pytest.mark.parametrize("budget", [1 << 23, 7])
def test_jaccard_top_k_equals_brute_force_over_batches_and_slices(budget, monkeypatch):
    monkeypatch.setattr(coactivation, "PAIR_BUDGET", budget)
    fires = torch.rand(300, 40, generator=torch.Generator().manual_seed(0)) < 0.12
    fires[:, 39] = False  # a feature that never fires: no partners
    counter = CoactivationCounter(40)
    for rows in torch.arange(300).split(64):  # batches, each with its own row numbers
        row, feat = fires[rows].nonzero(as_tuple=True)
        counter.add(row, feat)
    table = counter.top(fires.sum(0), 5)
    assert_top_matches(table, brute_jaccard(fires), 5)
    assert (table.index_FK[39] == -1).all()


def test_rows_of_different_lengths_and_single_entries_count_only_real_pairs():
    counter = CoactivationCounter(6)
    counter.add(torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([1, 2, 5, 3, 2, 5]))
    counter._flush()
    pairs = dict(zip((counter.keys_P // 6 * 10 + counter.keys_P % 6).tolist(), counter.counts_P.tolist()))
    assert pairs == {12: 1, 15: 1, 25: 2}
