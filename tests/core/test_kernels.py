"""The C++ row top-k against torch.topk, its fallbacks, and its build."""

from __future__ import annotations

import os

import pytest
import torch

from sae_core import kernels
from sae_core.saes.sparse import SparseActs, row_topk


@pytest.fixture(autouse=True)
def built() -> None:
    """Skip, saying why, where the kernel cannot be built; fail instead under SAESCOPE_REQUIRE_NATIVE=1 (CI)."""
    if kernels.library() is None:
        reason = "the C++ kernel could not be built here (no compiler, or it failed: see the warning)"
        if os.environ.get("SAESCOPE_REQUIRE_NATIVE") == "1":
            pytest.fail(f"{reason} and SAESCOPE_REQUIRE_NATIVE=1")
        pytest.skip(reason)


def check_topk(pre: torch.Tensor, k: int) -> None:
    """The kernel's values are the k largest of pre (as torch.topk finds them), at distinct columns."""
    vals, idx = kernels.row_topk(pre, k)
    want = pre.float().topk(k, dim=-1).values
    assert torch.equal(vals.sort(dim=-1, descending=True).values, want)
    assert torch.equal(vals, pre.float().gather(1, idx))
    assert all(len(set(row.tolist())) == k for row in idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "cols", "k"), [
    (9, 8192, 32),   # the training shape: whole strided groups
    (3, 70000, 32),  # wide: 2187 groups of 32 columns and a tail of 16
    (7, 300, 5),     # 256 columns in groups and a tail of 44
    (3, 100, 7),     # fewer columns than groups: one plain pass
    (4, 1024, 300),  # k beyond the number of groups
    (2, 64, 64),     # every column
    (0, 512, 3),     # no rows
])
def test_matches_torch_topk(dtype: torch.dtype, rows: int, cols: int, k: int) -> None:
    pre = torch.randn(rows, cols, generator=torch.Generator().manual_seed(cols)).to(dtype)
    check_topk(pre, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ties_pick_distinct_columns(dtype: torch.dtype) -> None:
    pre = torch.randint(0, 3, (16, 2048), generator=torch.Generator().manual_seed(0)).to(dtype)
    check_topk(pre, 40)
    check_topk(-pre, 40)  # ties below zero, where a key flips every bit of the value
    check_topk(torch.zeros(4, 512, dtype=dtype), 10)


def test_ties_at_the_kth_value_spread_over_the_columns() -> None:
    """Rows that tie everywhere: each row takes k distinct columns, and the rows do not all take the same ones (in
    training the k-th value of a bf16 row often ties, and a fixed rule would favour some features in every row)."""
    vals, idx = kernels.row_topk(torch.zeros(256, 512), 8)
    picks = torch.bincount(idx.flatten(), minlength=512)
    assert all(len(set(row.tolist())) == 8 for row in idx) and (vals == 0).all()
    assert (picks > 0).sum() >= 400 and picks.max() <= 16  # 2048 picks over 512 columns: 4 each on average


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_negative_rows(dtype: torch.dtype) -> None:
    """Every value below zero, as pre-activations often are: the k largest are the least negative."""
    pre = -torch.rand(9, 8192, generator=torch.Generator().manual_seed(1)).to(dtype) - 0.5
    check_topk(pre, 32)
    mixed = torch.randn(5, 300, generator=torch.Generator().manual_seed(2)).to(dtype)
    mixed[:, :290] = -mixed[:, :290].abs()  # a few positive values at the end: some rows hold fewer than k
    check_topk(mixed, 16)


def test_infinities_and_nan() -> None:
    pre = torch.full((3, 1024), float("-inf"))
    pre[1, 700] = float("inf")
    pre[2, 5] = float("nan")  # ordered above every number, as torch.topk orders it
    vals, idx = kernels.row_topk(pre, 4)
    assert torch.isneginf(vals[0]).all() and len(set(idx[0].tolist())) == 4
    assert 700 in idx[1].tolist() and torch.isposinf(vals[1]).sum() == 1
    assert 5 in idx[2].tolist() and vals[2].isnan().sum() == 1


def test_inapplicable_inputs_fall_back() -> None:
    pre = torch.randn(4, 256)
    assert kernels.row_topk(pre.half(), 3) is None
    assert kernels.row_topk(pre, 0) is None
    assert kernels.row_topk(pre, 257) is None
    assert kernels.row_topk(pre.view(2, 2, 256), 3) is None
    transposed = torch.randn(256, 4).T  # not contiguous: copied, then selected
    check_topk(transposed, 3)


def test_row_topk_keeps_gradient_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    pre = torch.randn(6, 2048, requires_grad=True)
    vals, idx = row_topk(pre, 16)
    vals.sum().backward()
    assert pre.grad is not None and pre.grad.sum() == 16 * 6
    assert torch.equal(pre.grad.nonzero()[:, 1].view(6, 16).sort(-1).values, idx.sort(-1).values)
    assert row_topk(pre.detach().bfloat16(), 16)[0].dtype == torch.bfloat16
    monkeypatch.setenv("SAESCOPE_NATIVE", "0")
    assert kernels.row_topk(pre, 16) is None
    torch_vals, _ = row_topk(pre.detach(), 16)
    assert torch.equal(torch_vals.sort(-1).values, vals.detach().sort(-1).values)


def decode_pairs(n: int, d_sae: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    """k pairs on each of n rows, their values, and the pairs grouped by feature as `FeatureOrder` holds them."""
    gen = torch.Generator().manual_seed(seed)
    cols_M = torch.randint(0, d_sae, (n * k,), generator=gen)
    rows_M = torch.arange(n).repeat_interleave(k)
    order = SparseActs.from_rows(torch.rand(n, k, generator=gen), cols_M.view(n, k)).by_feature(d_sae)
    return torch.rand(n * k, generator=gen), cols_M, rows_M, order.order_M, order.rows_M, order.offsets_F


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "d_sae", "d", "k"), [
    (64, 512, 48, 8),    # rows a multiple of the kernel's 16 lanes
    (33, 100, 37, 5),    # a tail of 5 columns after the lanes; features without pairs
    (5, 4096, 20, 3),    # most features without pairs, the last ones among them
    (0, 16, 32, 4),      # no pairs at all
])
def test_decode_grads_equal_the_float64_sums(dtype: torch.dtype, n: int, d_sae: int, d: int, k: int) -> None:
    """Each value's gradient is its row's gradient . its table row, and each table row's the values' sum of
    gradient rows, to float32's rounding whatever the input dtype; features without pairs get zero rows."""
    vals_M, cols_M, rows_M, order_M, feature_rows_M, offsets_F = decode_pairs(n, d_sae, k, seed=d)
    grad_ND = torch.randn(n, d, generator=torch.Generator().manual_seed(1)).to(dtype)
    table_FD = torch.randn(d_sae, d, generator=torch.Generator().manual_seed(2)).to(dtype)
    grad_vals_M, grad_table_FD = kernels.decode_grads(grad_ND, table_FD, vals_M, order_M, feature_rows_M, offsets_F)
    g64, t64 = grad_ND.double(), table_FD.double()
    want_vals = (g64[rows_M] * t64[cols_M]).sum(1)
    want_table = torch.zeros(d_sae, d, dtype=torch.float64).index_add_(0, cols_M, vals_M.double()[:, None] * g64[rows_M])
    assert grad_vals_M.dtype == grad_table_FD.dtype == torch.float32
    torch.testing.assert_close(grad_vals_M.double(), want_vals, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_table_FD.double(), want_table, rtol=1e-5, atol=1e-5)
    assert not grad_table_FD[torch.bincount(cols_M, minlength=d_sae) == 0].any()


def test_decode_grads_leave_inputs_they_were_not_built_for_to_the_caller() -> None:
    vals_M, _cols, _rows, order_M, rows_M, offsets_F = decode_pairs(8, 64, 4, seed=0)
    grad_ND, table_FD = torch.randn(8, 16), torch.randn(64, 16)
    args = (vals_M, order_M, rows_M, offsets_F)
    assert kernels.decode_grads(grad_ND.half(), table_FD.half(), *args) is None
    assert kernels.decode_grads(grad_ND, table_FD.bfloat16(), *args) is None  # dtypes that differ
    assert kernels.decode_grads(grad_ND, table_FD[:, :8], *args) is None  # widths that differ
    assert kernels.decode_grads(grad_ND, table_FD[:32], *args) is None  # a table the pairs were not grouped for
    assert kernels.decode_grads(grad_ND, table_FD, vals_M[1:], order_M, rows_M, offsets_F) is None
    assert kernels.decode_grads(grad_ND.T.contiguous().T, table_FD, *args) is not None  # strided: copied


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """An empty kernel cache under tmp_path; the process's own library is restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernels.library.cache_clear()
    yield tmp_path
    kernels.library.cache_clear()


def test_builds_into_the_cache(fresh_library) -> None:
    assert kernels.library() is not None
    built = list((fresh_library / "saescope" / "kernels").glob("kernels-*.so"))
    assert len(built) == 1
    kernels.library.cache_clear()
    stamp = built[0].stat().st_mtime_ns
    kernels.library()
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


@pytest.mark.parametrize(("cxx", "message"), [("false", "could not compile"), ("/no/such/compiler", "No such file")])
def test_a_failed_build_warns_and_falls_back(fresh_library, monkeypatch: pytest.MonkeyPatch, cxx: str,
                                             message: str) -> None:
    monkeypatch.setenv("CXX", cxx)
    with pytest.warns(UserWarning, match=message):
        assert kernels.row_topk(torch.randn(2, 512), 3) is None
    vals, _ = row_topk(torch.randn(2, 512), 3)  # the PyTorch path
    assert vals.shape == (2, 3)
