"""Co-activation: exact Jaccard from sparse pair counts, against a dense brute force on small cases, and the
torch counting (the recorder's, on any device) against the same steps in NumPy on the same firing."""

import numpy as np
import pytest
import torch

from sae_core.records import coactivation
from sae_core.records.coactivation import CoactivationCounter, NumpyArrays, TorchArrays

ARRAYS = {"numpy": NumpyArrays, "torch": lambda: TorchArrays("cpu")}


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


def pair_table(counter: CoactivationCounter) -> dict[int, int]:
    """The counter's pairs as {key: count}, after folding in what is pending."""
    counter._flush()
    keys, counts = (torch.as_tensor(a) for a in (counter.keys_P, counter.counts_P))
    return dict(zip(keys.tolist(), counts.tolist()))


@pytest.mark.parametrize("arrays", ARRAYS)
@pytest.mark.parametrize("budget", [1 << 23, 7])
def test_jaccard_top_k_equals_brute_force_over_batches_and_slices(arrays, budget, monkeypatch):
    monkeypatch.setattr(coactivation, "PAIR_BUDGET", budget)
    fires = torch.rand(300, 40, generator=torch.Generator().manual_seed(0)) < 0.12
    fires[:, 39] = False  # a feature that never fires: no partners
    counter = CoactivationCounter(40, ARRAYS[arrays]())
    for rows in torch.arange(300).split(64):  # batches, each with its own row numbers
        row, feat = fires[rows].nonzero(as_tuple=True)
        counter.add(row, feat)
    table = counter.top(fires.sum(0), 5)
    assert_top_matches(table, brute_jaccard(fires), 5)
    assert (table.index_FK[39] == -1).all()


@pytest.mark.parametrize("arrays", ARRAYS)
def test_rows_of_different_lengths_and_single_entries_count_only_real_pairs(arrays):
    counter = CoactivationCounter(6, ARRAYS[arrays]())
    counter.add(torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([1, 2, 5, 3, 2, 5]))
    assert pair_table(counter) == {1 * 6 + 2: 1, 1 * 6 + 5: 1, 2 * 6 + 5: 2}


def dense_rows(g: torch.Generator, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row fires exactly 8 features (a TopK SAE's batch)."""
    feat = torch.rand(50, n_features, generator=g).topk(8, dim=1).indices.sort(dim=1).values
    return torch.arange(50).repeat_interleave(8), feat.flatten()


def ragged_rows(g: torch.Generator, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of any length: none, one entry or up to about 20."""
    density = torch.rand(60, 1, generator=g) * min(0.3, 20 / n_features)
    return (torch.rand(60, n_features, generator=g) < density).nonzero(as_tuple=True)


def single_entries(g: torch.Generator, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one entry each: no pairs at all."""
    return torch.arange(30), torch.randint(n_features, (30,), generator=g)


def empty_batch(g: torch.Generator, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)


def wide_keys(g: torch.Generator, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows among the highest features, whose keys a * F + b pass 2^31 when F^2 does."""
    row, feat = ragged_rows(g, 60)
    return row, feat + n_features - 60


@pytest.mark.parametrize("n_features", [64, 50_000], ids=["int32-keys", "int64-keys"])
@pytest.mark.parametrize("budget", [1 << 23, 40])
def test_torch_counting_gives_the_numpy_counts_and_jaccard_top_k(n_features, budget, monkeypatch):
    monkeypatch.setattr(coactivation, "PAIR_BUDGET", budget)
    g = torch.Generator().manual_seed(1)
    batches = [make(g, n_features) for make in
               (dense_rows, ragged_rows, empty_batch, single_entries, wide_keys, dense_rows, ragged_rows)]
    numpy_counter, torch_counter = CoactivationCounter(n_features, NumpyArrays()), CoactivationCounter(n_features)
    count_F = torch.zeros(n_features, dtype=torch.long)
    for row, feat in batches:
        numpy_counter.add(row, feat)
        torch_counter.add(row, feat)
        count_F += torch.bincount(feat, minlength=n_features)
    assert isinstance(numpy_counter.keys_P, np.ndarray) and isinstance(torch_counter.keys_P, torch.Tensor)
    assert torch_counter.keys_P.dtype == (torch.int32 if n_features == 64 else torch.int64)
    pairs = pair_table(numpy_counter)
    assert pairs == pair_table(torch_counter)
    if n_features > 46340:
        assert max(pairs) >= 2**31  # the argsort path of the merge, not the packed sort
    numpy_top, torch_top = numpy_counter.top(count_F, 5), torch_counter.top(count_F, 5)
    assert torch.equal(numpy_top.index_FK, torch_top.index_FK)
    assert torch.equal(numpy_top.value_FK, torch_top.value_FK)
    assert (numpy_top.index_FK >= 0).sum() > n_features // 100  # partners were found, not two empty tables
