"""Nearest features of a wide dictionary (issue 22): the approximate (IVF) search's time, peak memory and recall.

The dictionary is bench/million_sae.py's decoder built in memory (the TopK initialisation's random rows, same seed,
so the same directions), with `--planted` pairs of siblings planted at each of several cosines. Printed: the
search's time and the process's peak RSS before and after it; recall@k on `--sample` unplanted rows against brute
force for those rows; the largest gap between a returned value and the true cosine; how many planted siblings each
side found. Isotropic random directions are the hard case: their nearest others sit at cosines barely above the
thousandth nearest, so recall there is a floor, while the planted siblings show what a researcher looks for.

`--threshold` instead times the exact and the approximate search at a few widths (median of `--repeats`), the
figures EXACT_UP_TO in sae_core/records/neighbours.py is chosen from.

Run: .venv/bin/python bench/neighbours.py [--features 1048576] [--d-in 576] [--nprobe 8] [--sample 2000]
     .venv/bin/python bench/neighbours.py --threshold [--widths 8192 16384 32768] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable

import torch

from sae_core.allocator import keep_freed_memory
from sae_core.records.directions import TopTable
from sae_core.records.neighbours import NPROBE, approximate_neighbours, exact_neighbours

COSINES = (0.3, 0.5, 0.7, 0.9)
"""Cosines the planted siblings are made at; random rows' nearest others at D = 576 sit near 0.2."""


def random_decoder(features: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """bench/million_sae.py's decoder directions (SAE.initialize draws randn rows from this seed), unnormalised."""
    return torch.randn(features, d_in, generator=torch.Generator().manual_seed(seed))


def plant_siblings(W_FD: torch.Tensor, per_cosine: int, generator: torch.Generator) -> dict[float, torch.Tensor]:
    """Overwrite rows so that pairs (a, b) have cosine c for each c in COSINES: the pairs [n, 2] by cosine."""
    rows = torch.randperm(len(W_FD), generator=generator)[: 2 * per_cosine * len(COSINES)].view(len(COSINES), -1, 2)
    for c, pairs in zip(COSINES, rows):
        a_ND = torch.nn.functional.normalize(W_FD[pairs[:, 0]], dim=1)
        noise_ND = torch.randn(a_ND.shape, generator=generator)
        noise_ND = torch.nn.functional.normalize(noise_ND - (noise_ND * a_ND).sum(1, keepdim=True) * a_ND, dim=1)
        W_FD[pairs[:, 1]] = c * a_ND + math.sqrt(1 - c * c) * noise_ND
    return dict(zip(COSINES, rows))


def peak_rss_gb() -> float:
    """The process's peak resident set so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def timed(fn: Callable[[], TopTable]) -> tuple[float, TopTable]:
    """Wall seconds of fn and its table."""
    start = time.perf_counter()
    table = fn()
    return time.perf_counter() - start, table


def cpu_timed(fn: Callable[[], TopTable]) -> tuple[float, float, TopTable]:
    """Wall and CPU seconds (all threads) of fn, and its table: on a shared machine the CPU time is the steadier."""
    cpu = time.process_time()
    wall, table = timed(fn)
    return wall, time.process_time() - cpu, table


def recall(found: TopTable, truth: TopTable) -> float:
    """Share of the true neighbours that `found` returns (rows aligned)."""
    return (found.index_FK[:, :, None] == truth.index_FK[:, None, :]).any(dim=1).float().mean().item()


def value_error(W_FD: torch.Tensor, rows_R: torch.Tensor, found: TopTable) -> float:
    """Largest gap between the returned values of `rows_R` and their recomputed cosines."""
    unit_FD = torch.nn.functional.normalize(W_FD, dim=1)
    cos_RK = (unit_FD[rows_R, None, :] * unit_FD[found.index_FK[rows_R]]).sum(-1)
    return (cos_RK - found.value_FK[rows_R]).abs().max().item()


def found_share(table: TopTable, pairs_N2: torch.Tensor) -> float:
    """Share of the planted pairs each side of which lists the other."""
    a, b = pairs_N2[:, 0], pairs_N2[:, 1]
    both = (table.index_FK[a] == b[:, None]).any(1) & (table.index_FK[b] == a[:, None]).any(1)
    return both.float().mean().item()


def wide(args: argparse.Namespace) -> None:
    """The approximate search on one wide dictionary: time, memory, recall, values and planted siblings."""
    generator = torch.Generator().manual_seed(1)
    W_FD = random_decoder(args.features, args.d_in)
    planted = plant_siblings(W_FD, args.planted, generator)
    before = peak_rss_gb()
    seconds, cpu, table = cpu_timed(lambda: approximate_neighbours(W_FD, args.k, nprobe=args.nprobe))
    after = peak_rss_gb()
    used = torch.ones(len(W_FD), dtype=torch.bool)
    used[torch.cat([p.flatten() for p in planted.values()])] = False
    rows = used.nonzero()[:, 0]
    rows = rows[torch.randperm(len(rows), generator=generator)[: args.sample]]
    exact_seconds, truth = timed(lambda: exact_neighbours(W_FD, args.k, rows))
    print(f"{args.features} x {args.d_in} random dictionary, k={args.k}, nprobe={args.nprobe}, "
          f"threads={torch.get_num_threads()}")
    print(f"approximate search: {seconds:.1f} s wall, {cpu:.1f} s CPU; peak RSS {before:.2f} GB before it, {after:.2f} GB after "
          f"(the input alone is {W_FD.numel() * 4 / 1e9:.2f} GB)")
    sampled = TopTable(table.index_FK[rows], table.value_FK[rows])
    print(f"recall@{args.k} on {len(rows)} random unplanted rows: {recall(sampled, truth):.3f} "
          f"(brute force for them: {exact_seconds:.1f} s, true k-th cosine median {truth.value_FK[:, -1].median():.3f})")
    print(f"largest |value - true cosine| on those rows: {value_error(W_FD, rows, table):.2e}; "
          f"self listed: {bool((table.index_FK == torch.arange(len(W_FD))[:, None]).any())}")
    print("planted siblings found by both sides: " + ", ".join(
        f"cos {c}: {found_share(table, pairs):.3f} of {len(pairs)}" for c, pairs in planted.items()))


def threshold(args: argparse.Namespace) -> None:
    """Exact against approximate search, wall and CPU seconds at each width: what EXACT_UP_TO is chosen from."""
    searches = {"exact": lambda W_FD: exact_neighbours(W_FD, args.k),
                "approximate": lambda W_FD: approximate_neighbours(W_FD, args.k, nprobe=args.nprobe)}
    for width in args.widths:
        W_FD = random_decoder(width, args.d_in)
        line = []
        for name, search in searches.items():
            runs = [cpu_timed(lambda: search(W_FD))[:2] for _ in range(args.repeats)]  # noqa: B023 (called at once)
            line.append(f"{name} median {statistics.median(w for w, _ in runs):.2f} s wall, "
                        f"{statistics.median(c for _, c in runs):.2f} s CPU")
        print(f"{width} x {args.d_in}: " + "; ".join(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1 << 20)
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--k", type=int, default=10, help="neighbours per feature (RecordConfig.n_neighbours)")
    parser.add_argument("--nprobe", type=int, default=NPROBE)
    parser.add_argument("--sample", type=int, default=2000, help="rows whose recall is checked by brute force")
    parser.add_argument("--planted", type=int, default=1000, help="sibling pairs planted at each cosine")
    parser.add_argument("--threshold", action="store_true", help="time exact against approximate at --widths")
    parser.add_argument("--widths", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI runs
    (threshold if args.threshold else wide)(args)


if __name__ == "__main__":
    main()
