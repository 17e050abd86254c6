"""Which features fire together: exact pair counts over the recorded tokens, kept sparse, then Jaccard top-k.

For features a and b firing on token sets A and B, Jaccard |A & B| / |A u B| = c / (n_a + n_b - c) with
c the tokens where both fire and n the per-feature counts the recorder keeps anyway. c is counted from
the firing entries each batch already holds (a TopK SAE: k(k-1)/2 pairs a token) as sorted keys
a * F + b (a < b) with counts: memory grows with the distinct pairs seen, never with F x F.

The counting runs in torch on the recorder's device. On a GPU, copying each batch's entries out to count them
on the host tripled an H200's recording time (1.35 s against 0.44 s without co-activation, F=16384). On the CPU
torch is as fast or faster than the same steps in NumPy over a whole recording pass (`bench/record.py`, demo
layer-6 SAE, F=8192, k=32): 2.1 s against 5.5 s on a Xeon with AMX, 2.9 s against 3.1 s on an AVX2-only EPYC,
the same tables on both. The steps are written once over the few array primitives they name (`Arrays`):
`TorchArrays` counts; `NumpyArrays` is the same steps in NumPy, kept as the second implementation the tests and
the bench compare torch's counts and speed against. Keys are 32-bit whenever F^2 fits (F <= 46340).
Each batch's counts wait in a list and are merged into the running table only when they outgrow it, so a
pair is re-sorted O(log batches) times in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from ..distributed import Dist
from .directions import TopTable
from .selection import rank_in_group

PAIR_BUDGET = 1 << 23
"""Pairs formed at once (8M keys): a batch whose rows fire densely is counted a slice of rows at a time."""


Array = Any
"""A NumPy array or a torch tensor: whichever the counter's `Arrays` makes."""


class Arrays(Protocol):
    """The array primitives the counting steps need, so the steps are written once for NumPy and torch."""

    int64: Any

    def array(self, t: torch.Tensor) -> Array:
        """`t` as this backend's array (on its device)."""

    def tensor(self, a: Array) -> torch.Tensor:
        """`a` as a torch tensor (sharing memory where it can)."""

    def cat(self, parts: list[Array]) -> Array: ...

    def cast(self, a: Array, dtype: Any) -> Array: ...

    def full(self, shape: tuple[int, int], value: int, like: Array) -> Array:
        """A `shape` array of `value`, of `like`'s dtype."""

    def arange(self, n: int) -> Array: ...

    def sort(self, a: Array) -> Array: ...

    def argsort(self, a: Array) -> Array:
        """A stable sorting order."""

    def run_starts(self, sorted_a: Array) -> Array:
        """Where each run of equal values begins in a sorted array (not empty)."""

    def run_lengths(self, starts: Array, n: int) -> Array:
        """The length of each run beginning at `starts` in an array of `n`."""

    def run_ids(self, lengths: Array, n: int) -> Array:
        """Run i's number i repeated `lengths[i]` times (`n` in all)."""

    def run_sums(self, values: Array, starts: Array) -> Array:
        """The sum of `values` over each run beginning at `starts`."""


class NumpyArrays:
    """The counting steps in NumPy on the host: the reference torch's counts and speed are compared against."""

    int64 = np.dtype(np.int64)

    def array(self, t: torch.Tensor) -> np.ndarray:
        return t.cpu().numpy()

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)

    def cat(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def cast(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return a.astype(dtype)

    def full(self, shape: tuple[int, int], value: int, like: np.ndarray) -> np.ndarray:
        return np.full(shape, value, dtype=like.dtype)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def sort(self, a: np.ndarray) -> np.ndarray:
        return np.sort(a)

    def argsort(self, a: np.ndarray) -> np.ndarray:
        return np.argsort(a, kind="stable")

    def run_starts(self, sorted_a: np.ndarray) -> np.ndarray:
        change = np.empty(len(sorted_a), dtype=bool)
        change[0] = True
        np.not_equal(sorted_a[1:], sorted_a[:-1], out=change[1:])
        return np.flatnonzero(change)

    def run_lengths(self, starts: np.ndarray, n: int) -> np.ndarray:
        return np.diff(starts, append=n)

    def run_ids(self, lengths: np.ndarray, n: int) -> np.ndarray:
        return np.repeat(np.arange(len(lengths)), lengths)

    def run_sums(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts)


class TorchArrays:
    """Counting in torch on `device`: on a GPU nothing leaves it but a few sizes (and the result, in `top`)."""

    int64 = torch.int64

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def array(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def tensor(self, a: torch.Tensor) -> torch.Tensor:
        return a

    def cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)

    def cast(self, a: torch.Tensor, dtype: Any) -> torch.Tensor:
        return a.to(dtype)

    def full(self, shape: tuple[int, int], value: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full(shape, value, dtype=like.dtype, device=like.device)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def sort(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a).values

    def argsort(self, a: torch.Tensor) -> torch.Tensor:
        return torch.argsort(a, stable=True)

    def run_starts(self, sorted_a: torch.Tensor) -> torch.Tensor:
        change = torch.ones(len(sorted_a), dtype=torch.bool, device=sorted_a.device)
        torch.ne(sorted_a[1:], sorted_a[:-1], out=change[1:])
        return change.nonzero().squeeze(1)

    def run_lengths(self, starts: torch.Tensor, n: int) -> torch.Tensor:
        return torch.diff(starts, append=starts.new_full((1,), n))

    def run_ids(self, lengths: torch.Tensor, n: int) -> torch.Tensor:
        return torch.repeat_interleave(lengths, output_size=n)

    def run_sums(self, values: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        prefix = torch.cat([values.new_zeros(1), values.cumsum(0)])
        return prefix[torch.cat([starts[1:], starts.new_full((1,), len(values))])] - prefix[starts]


class CoactivationCounter:
    """Counts, for every pair of features, the tokens on which both fire."""

    def __init__(self, d_sae: int, arrays: Arrays | None = None):
        self.d_sae = d_sae
        self.xp: Arrays = arrays or TorchArrays("cpu")
        self.key_dtype = torch.int32 if d_sae * d_sae < 2**31 else torch.int64
        self.keys_P = self.xp.array(torch.zeros(0, dtype=self.key_dtype))
        self.counts_P = self.xp.array(torch.zeros(0, dtype=torch.int64))
        self.pending: list[tuple[Array, Array]] = []
        self.n_pending = 0

    def add(self, row_C: torch.Tensor, feat_C: torch.Tensor) -> None:
        """Count the pairs of firing entries (sorted by row, then feature) that share a row."""
        rows, feats = self.xp.array(row_C), self.xp.array(feat_C.to(self.key_dtype))
        for keys in _pair_keys(rows, feats, self.d_sae, self.xp):
            self.pending.append(_run_lengths(self.xp.sort(keys), self.xp))
            self.n_pending += len(self.pending[-1][0])
        if self.n_pending > max(len(self.keys_P), PAIR_BUDGET):
            self._flush()

    def _flush(self) -> None:
        """Fold the pending counts into the running table."""
        if self.pending:
            self.keys_P, self.counts_P = _summed([(self.keys_P, self.counts_P), *self.pending], self.xp)
            self.pending, self.n_pending = [], 0

    def merge_ranks(self, dist: Dist) -> None:
        """Every rank's counts summed, in place, on every rank (pair counts add exactly)."""
        self._flush()
        if dist.active:
            keys, counts = (self.xp.array(dist.gather_cat(self.xp.tensor(a).to(dist.device)))
                            for a in (self.keys_P, self.counts_P))
            self.keys_P, self.counts_P = _summed([(keys, counts)], self.xp)

    def top(self, count_F: torch.Tensor, k: int) -> TopTable:
        """Each feature's k partners of highest Jaccard (index -1, score 0 where it has fewer than k partners)."""
        self._flush()
        keys, counts = self.xp.tensor(self.keys_P).long(), self.xp.tensor(self.counts_P)
        a_P, b_P = keys // self.d_sae, keys % self.d_sae
        count_F = count_F.to(keys.device).long()
        jaccard_P = (counts / (count_F[a_P] + count_F[b_P] - counts)).float()
        group_M, partner_M, score_M = torch.cat([a_P, b_P]), torch.cat([b_P, a_P]), torch.cat([jaccard_P, jaccard_P])
        order, rank = rank_in_group(group_M, score_M)
        kept, slot = order[rank < k], rank[rank < k]
        index_FK = torch.full((self.d_sae, k), -1, dtype=torch.long, device=keys.device)
        value_FK = torch.zeros((self.d_sae, k), device=keys.device)
        index_FK[group_M[kept], slot] = partner_M[kept]
        value_FK[group_M[kept], slot] = score_M[kept]
        return TopTable(index_FK.cpu(), value_FK.cpu())


def _pair_keys(rows_C: Array, feats_C: Array, d_sae: int, xp: Arrays) -> Iterator[Array]:
    """Keys a * d_sae + b of every pair of entries a < b sharing a row, a slice of whole rows at a time."""
    if len(rows_C) < 2:
        return
    starts = xp.run_starts(rows_C)
    lengths = xp.run_lengths(starts, len(rows_C))
    longest = int(lengths.max())
    if longest < 2:
        return
    per_slice = max(1, 2 * PAIR_BUDGET // (longest * (longest - 1)))
    bounds = [*starts[::per_slice].tolist(), len(rows_C)]
    for i, lo in enumerate(range(0, len(starts), per_slice)):
        grid, padded = _grid(feats_C[bounds[i]:bounds[i + 1]], lengths[lo:lo + per_slice], longest, xp)
        yield _grid_pairs(grid, padded, d_sae, xp)


def _grid(feats: Array, lengths: Array, width: int, xp: Arrays) -> tuple[Array, bool]:
    """Consecutive rows of `lengths` entries as a [rows, width] grid padded with -1, and whether any is padded."""
    if bool((lengths == width).all()):
        return feats.reshape(len(lengths), width), False
    grid = xp.full((len(lengths), width), -1, like=feats)
    row = xp.run_ids(lengths, len(feats))
    grid[row, xp.arange(len(feats)) - (lengths.cumsum(0) - lengths)[row]] = feats
    return grid, True


def _grid_pairs(grid: Array, padded: bool, d_sae: int, xp: Arrays) -> Array:
    """The pair keys of each grid row's features (padding -1 pairs with nothing).

    Column j pairs with column j + d for each offset d, where the later column holds a feature. Offsets
    over whole columns beat gathering the upper triangle's index pairs (6 ms against 26 ms for 16k rows of 32).
    """
    scaled = grid * d_sae
    parts = []
    for d in range(1, grid.shape[1]):
        keys = scaled[:, :-d] + grid[:, d:]
        parts.append(keys[grid[:, d:] >= 0] if padded else keys.ravel())
    return xp.cat(parts)


def _run_lengths(sorted_keys: Array, xp: Arrays) -> tuple[Array, Array]:
    """Distinct keys of a sorted array and how often each occurs."""
    if len(sorted_keys) == 0:
        return sorted_keys, xp.cast(sorted_keys, xp.int64)
    starts = xp.run_starts(sorted_keys)
    return sorted_keys[starts], xp.run_lengths(starts, len(sorted_keys))


def _summed(parts: list[tuple[Array, Array]], xp: Arrays) -> tuple[Array, Array]:
    """Several (keys, counts) tables as one, counts of equal keys added.

    Key and count are packed into one int64 (key above bit 32) so one vectorised sort orders both.
    """
    key_dtype = parts[0][0].dtype
    keys = xp.cast(xp.cat([p[0] for p in parts]), xp.int64)
    counts = xp.cat([p[1] for p in parts])
    if len(keys) == 0:
        return xp.cast(keys, key_dtype), counts
    if keys.max() < 2**31 and counts.max() < 2**32:
        packed = xp.sort((keys << 32) | counts)
        keys, counts = packed >> 32, packed & 0xFFFFFFFF
    else:
        order = xp.argsort(keys)
        keys, counts = keys[order], counts[order]
    starts = xp.run_starts(keys)
    return xp.cast(keys[starts], key_dtype), xp.run_sums(counts, starts)
