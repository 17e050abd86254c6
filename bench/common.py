"""What every benchmarked trainer shares: the batch stream, the step clock and the held-out metrics.

Imported by `bench/run_trainer.py` under saescope's Python and under the peer-tool environment alike, so
it needs nothing beyond numpy and torch (no sae_core): one definition of each figure for every tool.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

SAESCOPE_ENTRY = "import sys; from app.entry import main; sys.argv[0] = 'saescope'; main()"
"""`python -c SAESCOPE_ENTRY ARGS` is `saescope ARGS` as its console script runs it, from any checkout on PYTHONPATH."""


@dataclass(frozen=True)
class ProcessRun:
    """A finished child process: its exit code, wall seconds from start to exit, and its own peak RSS."""

    returncode: int
    wall_s: float
    peak_rss_gb: float


SPAWNER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(child.pid, 0); "
           "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')")
"""A bare Python that runs the measured command and writes its exit code and peak RSS (KiB) to a file.

Linux carries a process's peak RSS across exec, so a child spawned straight from the harness (which holds the
benchmark's rows, 2 GB) reported at least the harness's peak as its own: every tool measured 2.03 GB. Spawned
from this small process instead, a child's figure starts from tens of megabytes."""


def run_measured(command: list[str], env: dict[str, str], log_path: str, cwd: str | None = None) -> ProcessRun:
    """Run `command` to its end with output to `log_path`; its own peak RSS, through SPAWNER (not the harness's)."""
    started = time.perf_counter()
    with open(log_path, "w") as log, tempfile.NamedTemporaryFile("r", suffix=".rusage") as measured:
        subprocess.run([sys.executable, "-c", SPAWNER, measured.name, *command], env=env, stdout=log,
                       stderr=subprocess.STDOUT, cwd=cwd, check=False)
        code, max_rss_kib = map(int, measured.read().split())
    return ProcessRun(code, time.perf_counter() - started, max_rss_kib / 2**20)


EncodeDecode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""x_ND -> (x_hat_ND, f_NF): a trained SAE's reconstruction and its dense feature activations."""


def row_order(n_rows: int, n_total: int, seed: int) -> np.ndarray:
    """Row indices for `n_total` training rows: a fresh seeded permutation of the data each epoch."""
    rng = np.random.default_rng(seed)
    epochs = -(-n_total // n_rows)
    return np.concatenate([rng.permutation(n_rows) for _ in range(epochs)])[:n_total]


def batches(train_ND: np.ndarray, batch_size: int, tokens: int, seed: int) -> Iterator[torch.Tensor]:
    """The benchmark's stream of float32 batches, the same rows in the same order for every trainer."""
    order = row_order(len(train_ND), steps(tokens, batch_size) * batch_size, seed)
    for start in range(0, len(order), batch_size):
        yield torch.from_numpy(train_ND[np.sort(order[start : start + batch_size])])


def steps(tokens: int, batch_size: int) -> int:
    """Whole optimiser steps in a token budget (at least one)."""
    return max(1, tokens // batch_size)


@dataclass
class StepClock:
    """Time stamps taken once per training step, wherever the trainer lets us observe a step."""

    stamps: list[float] = field(default_factory=list)

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def tokens_per_s(self, batch_size: int, warmup: int, segment: int) -> dict[str, float]:
        """Median and spread of throughput over segments of `segment` steps after `warmup` steps."""
        stamps = self.stamps[warmup:]
        rates = [
            segment * batch_size / (stamps[i + segment] - stamps[i])
            for i in range(0, len(stamps) - segment, segment)
        ]
        if not rates:
            raise ValueError(f"only {len(self.stamps)} steps timed: too few for warm-up {warmup} + one segment")
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "segments": len(rates)}


class TimedIterator:
    """Wraps a batch iterator: each request for a batch marks the end of the previous step."""

    def __init__(self, inner: Iterator[torch.Tensor], clock: StepClock):
        self.inner, self.clock = inner, clock

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> torch.Tensor:
        self.clock.tick()
        return next(self.inner)


@torch.no_grad()
def evaluate(encode_decode: EncodeDecode, heldout_ND: np.ndarray, chunk: int = 4096) -> dict[str, float]:
    """FVU around the held-out mean, mean L0 and the fraction of features that never fire, batch-free."""
    x_all = torch.from_numpy(heldout_ND)
    mean_D = x_all.double().mean(0)
    sq_err = sq_dev = active = 0.0
    fired_F: torch.Tensor | None = None
    for start in range(0, len(x_all), chunk):
        x_ND = x_all[start : start + chunk]
        x_hat_ND, f_NF = encode_decode(x_ND)
        sq_err += (x_hat_ND.double() - x_ND.double()).pow(2).sum().item()
        sq_dev += (x_ND.double() - mean_D).pow(2).sum().item()
        nonzero_NF = f_NF != 0
        active += nonzero_NF.sum().item()
        fired_F = nonzero_NF.any(0) if fired_F is None else fired_F | nonzero_NF.any(0)
    assert fired_F is not None, "empty held-out set"
    return {
        "fvu": sq_err / sq_dev,
        "l0": active / len(x_all),
        "dead_fraction": 1.0 - fired_F.float().mean().item(),
    }
