"""Each feature's nearest sibling features by decoder cosine similarity: exact, or approximate for wide dictionaries.

The exact search compares every pair of features: F^2 D multiply-adds, 1.2e15 flops at F = 2^20, D = 576, hours on
a CPU (issue 22). Above EXACT_UP_TO features `auto` switches to an inverted-file (IVF) search: spherical k-means
splits the features into about sqrt(F) cells, and each feature is compared exactly with the members of its
NPROBE nearest cells only, so about F^1.5 NPROBE D multiply-adds. Both return exact cosines for the neighbours they
return; the approximate search may miss some true neighbours (its recall is measured in bench/neighbours.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .directions import TopTable

NeighbourSearch = Literal["exact", "approximate", "auto"]
"""How `nearest_features` searches: over all pairs, by IVF, or exact up to EXACT_UP_TO features and IVF above."""

EXACT_UP_TO = 1 << 16
"""Widest dictionary `auto` searches exactly: every figure and test of the demo-sized dictionaries stays exact.

Brute force costs F^2 D: on a shared, busy 2-core EPYC 1,000 rows of a 131,072 x 576 dictionary took 6.0 s (4.6e-8 s
a pair), so a whole 65,536-wide one takes about 3 minutes there, a 131,072-wide one 13, and 2^20 about 14 hours.
"""

NPROBE = 8
"""Cells (of about sqrt(F)) each feature is compared within; time grows in proportion to it.

On a 131,072 x 576 random dictionary (362 cells; bench/neighbours.py) planted sibling pairs were found by both
sides at cosine 0.9 in 0.97 of pairs, 0.7 in 0.81, 0.5 in 0.50; recall@10 of random rows was 0.12, whose true
neighbours (cosine about 0.16) stand barely above the thousandth nearest, so nothing short of brute force finds
them. At 2^20 x 576 (1,024 cells) the same figures were 0.95, 0.64, 0.30 and 0.06, in 581 s of CPU for the whole
bench (search, brute force for 2,000 rows, setup) on a shared 2-core EPYC; the search added 3.0 GB to the peak RSS.
"""

KMEANS_ITERS = 10
"""Lloyd iterations of the spherical k-means that makes the cells."""

SAMPLE_PER_CELL = 64
"""Features sampled per cell to fit the k-means on (FAISS warns below 39 a centroid)."""

CHUNK = 256
"""Features the exact search handles at once, so a [chunk, F] block of cosines is all that is held."""

BLOCK = 4096
"""Rows (queries, or a cell's members) the approximate search multiplies at once: blocks of at most BLOCK^2 floats."""


@torch.no_grad()
def nearest_features(W_dec_FD: torch.Tensor, k: int, search: NeighbourSearch = "auto", seed: int = 0) -> TopTable:
    """Each feature's k most similar others by decoder cosine similarity, excluding itself, most similar first."""
    if resolve_search(search, W_dec_FD.shape[0]) == "exact":
        return exact_neighbours(W_dec_FD, k)
    return approximate_neighbours(W_dec_FD, k, seed=seed)


def resolve_search(search: NeighbourSearch, n_features: int) -> Literal["exact", "approximate"]:
    """The search `search` stands for on a dictionary of `n_features`: `auto` is exact up to EXACT_UP_TO."""
    if search == "auto":
        return "exact" if n_features <= EXACT_UP_TO else "approximate"
    return search


@torch.no_grad()
def exact_neighbours(W_dec_FD: torch.Tensor, k: int, rows_R: torch.Tensor | None = None) -> TopTable:
    """The reference: the k nearest others over all features of every feature (or of `rows_R`), CHUNK at a time."""
    unit_FD = nn.functional.normalize(W_dec_FD.float(), dim=1)
    k = min(k, unit_FD.shape[0] - 1)
    rows_R = torch.arange(len(unit_FD), device=unit_FD.device) if rows_R is None else rows_R.to(unit_FD.device)
    parts = [_top_others(unit_FD, rows_C, k) for rows_C in rows_R.split(CHUNK)]
    return TopTable(torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu())


@torch.no_grad()
def approximate_neighbours(W_dec_FD: torch.Tensor, k: int, *, nprobe: int = NPROBE, seed: int = 0) -> TopTable:
    """Each feature's k nearest others among the members of its `nprobe` nearest k-means cells (an IVF search).

    Deterministic given `seed` (and the thread count, as any matrix product). Features are sorted by cell so a
    cell's members are one slice; each cell is multiplied against every feature that probes it, BLOCK x BLOCK at
    a time. Beyond the input it holds one float32 copy of the unit decoder rows (F x D), the cells' probe lists
    (F x nprobe longs, twice), the best-so-far table (F x k, value and index) and two BLOCK x BLOCK products: at
    F = 2^20, D = 576, nprobe = 8, k = 10 about 2.4 GB + 0.2 GB + 0.1 GB + 0.2 GB. A feature whose probed cells
    hold fewer than k others (tiny cells) is searched exactly.
    """
    n = W_dec_FD.shape[0]
    k = min(k, n - 1)
    cells_CD = spherical_kmeans(W_dec_FD, max(1, round(math.sqrt(n))), torch.Generator().manual_seed(seed))
    probes_FP = nearest_cells(W_dec_FD, cells_CD, min(nprobe, len(cells_CD)))
    order_F = probes_FP[:, 0].argsort(stable=True)
    unit_FD = _unit_rows(W_dec_FD, order_F)
    best = _Best(n, k, unit_FD.device)
    members = _bounds(probes_FP[order_F, 0], len(cells_CD))
    flat = probes_FP[order_F].flatten()
    queries = _bounds(flat, len(cells_CD))
    probing_F = flat.argsort(stable=True) // probes_FP.shape[1]
    for c in range(len(cells_CD)):
        _search_cell(unit_FD, members[c], members[c + 1], probing_F[queries[c] : queries[c + 1]], best)
    short = (best.value_FK == -torch.inf).any(dim=1).nonzero()[:, 0]
    for rows_R in short.split(CHUNK):
        best.index_FK[rows_R], best.value_FK[rows_R] = _top_others(unit_FD, rows_R, k)
    index_FK, value_FK = torch.empty_like(best.index_FK), torch.empty_like(best.value_FK)
    index_FK[order_F], value_FK[order_F] = order_F[best.index_FK], best.value_FK
    return TopTable(index_FK.cpu(), value_FK.cpu())


def spherical_kmeans(W_dec_FD: torch.Tensor, n_cells: int, generator: torch.Generator) -> torch.Tensor:
    """Unit centroids [n_cells, D] from KMEANS_ITERS Lloyd iterations by cosine on SAMPLE_PER_CELL rows a cell.

    Starts from randomly drawn rows; a cell left empty keeps its previous centroid.
    """
    pick = torch.randperm(len(W_dec_FD), generator=generator)[: n_cells * SAMPLE_PER_CELL].to(W_dec_FD.device)
    sample_SD = nn.functional.normalize(W_dec_FD[pick].float(), dim=1)
    cells_CD = sample_SD[:n_cells].clone()
    for _ in range(KMEANS_ITERS):
        assign_S = nearest_cells(sample_SD, cells_CD, 1)[:, 0]
        sums_CD = torch.zeros_like(cells_CD).index_add_(0, assign_S, sample_SD)
        norms_C1 = sums_CD.norm(dim=1, keepdim=True)
        cells_CD = torch.where(norms_C1 > 0, sums_CD / norms_C1.clamp_min(1e-30), cells_CD)
    return cells_CD


def nearest_cells(W_dec_FD: torch.Tensor, cells_CD: torch.Tensor, n: int) -> torch.Tensor:
    """The `n` cells [F, n] of highest cosine with each row, nearest first, BLOCK rows at a time."""
    return torch.cat([(rows_BD.float() @ cells_CD.T).topk(n, dim=1).indices for rows_BD in W_dec_FD.split(BLOCK)])


class _Best:
    """The k best (value, index) found so far for every row, merged block by block."""

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.value_FK = torch.full((n, k), -torch.inf, device=device)
        self.index_FK = torch.full((n, k), -1, dtype=torch.long, device=device)

    def merge(self, rows_R: torch.Tensor | slice, value_RN: torch.Tensor, index_RN: torch.Tensor) -> None:
        """Keep the k best distinct indices of each row's current entries and the new ones (`rows_R` distinct).

        A pair can arrive twice, once from each side (see `_search_cell`); its second copy is dropped.
        """
        index_RC, order_RC = torch.cat([self.index_FK[rows_R], index_RN], dim=1).sort(dim=1, stable=True)
        value_RC = torch.cat([self.value_FK[rows_R], value_RN], dim=1).gather(1, order_RC)
        value_RC[:, 1:].masked_fill_(index_RC[:, 1:] == index_RC[:, :-1], -torch.inf)
        top = value_RC.topk(self.value_FK.shape[1], dim=1)
        self.index_FK[rows_R] = index_RC.gather(1, top.indices)
        self.value_FK[rows_R] = top.values


def _search_cell(unit_FD: torch.Tensor, lo: int, hi: int, probing_Q: torch.Tensor, best: _Best) -> None:
    """Compare the cell's members (rows lo:hi) with every row that probes the cell, and keep both sides' best.

    Cosine is symmetric, so each product also offers every member its nearest probing rows: a pair is found when
    either feature probes the other's cell, which raises recall at no extra multiply.
    """
    k = best.value_FK.shape[1]
    for rows_R in probing_Q.split(BLOCK):
        queries_RD = unit_FD[rows_R]
        values, indices = [], []
        for start in range(lo, hi, BLOCK):
            stop = min(hi, start + BLOCK)
            cos_RM = queries_RD @ unit_FD[start:stop].T
            own = ((rows_R >= start) & (rows_R < stop)).nonzero()[:, 0]
            cos_RM[own, rows_R[own] - start] = -torch.inf
            top = cos_RM.topk(min(k, stop - start), dim=1)
            values.append(top.values)
            indices.append(top.indices + start)
            back = cos_RM.T.contiguous().topk(min(k, len(rows_R)), dim=1)  # a 4096 x 1024 block: 41 ms against 52 strided
            best.merge(slice(start, stop), back.values, rows_R[back.indices])
        best.merge(rows_R, torch.cat(values, dim=1), torch.cat(indices, dim=1))


def _top_others(unit_FD: torch.Tensor, rows_R: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest others (indices, values) of the rows `rows_R` over every row of `unit_FD`."""
    cos_RF = unit_FD[rows_R] @ unit_FD.T
    cos_RF[torch.arange(len(rows_R), device=cos_RF.device), rows_R] = -torch.inf
    top = cos_RF.topk(k, dim=1)
    return top.indices, top.values


def _unit_rows(W_dec_FD: torch.Tensor, order_F: torch.Tensor) -> torch.Tensor:
    """The rows of W_dec_FD in `order_F`, normalised to float32 unit vectors, built BLOCK rows at a time."""
    unit_FD = torch.empty(W_dec_FD.shape, dtype=torch.float32, device=W_dec_FD.device)
    for start in range(0, len(order_F), BLOCK):
        rows = order_F[start : start + BLOCK]
        unit_FD[start : start + len(rows)] = nn.functional.normalize(W_dec_FD[rows].float(), dim=1)
    return unit_FD


def _bounds(cell_N: torch.Tensor, n_cells: int) -> list[int]:
    """Where each cell's run starts in `cell_N` sorted by cell, and the end: n_cells + 1 offsets."""
    return [0, *torch.bincount(cell_N, minlength=n_cells).cumsum(0).tolist()]
