"""Kill -9 at random moments: a command run as the shell runs it, killed at a seeded random point of its work.

A kill is aimed at the command's work, not at its imports: it comes a seeded delay after the command's
progress bar first reaches a seeded fraction of its total (the delay drawn within a share of an
uninterrupted run's time, so that it reaches past the bar into the writing that follows it). The fractions
of one test's kills rise, so each kill of a chain (kill, resume, kill, ..., finish) lands in work the
previous one left undone.
More kills per test: SAESCOPE_CRASH_KILLS=N (default 2).

Commands run on one thread, and so do the uninterrupted runs they are compared with: results are then
bit-equal whatever the thread count would split, and tiny models on a busy machine run several times
faster than with threads waiting on each other.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

CORE = (sys.executable, "-m", "sae_core")
APP = (sys.executable, "-m", "app")
START_TIMEOUT_S = 120.0


def kill_seeds() -> range:
    """The seeds of a test's kills: one kill each, in order, before the run that finishes the work."""
    return range(int(os.environ.get("SAESCOPE_CRASH_KILLS", "2")))


@dataclass(frozen=True)
class KillPoint:
    """Where a kill lands: `delay` seconds after the progress bar first shows `fraction` of its total."""

    seed: int
    fraction: float
    delay: float


def kill_points(max_delay: float) -> list[KillPoint]:
    """One point per seed, each drawn by its own generator, in order of rising fraction."""
    draws = [random.Random(seed) for seed in kill_seeds()]
    points = [KillPoint(seed, rng.random(), rng.uniform(0.0, max_delay)) for seed, rng in zip(kill_seeds(), draws)]
    return sorted(points, key=lambda p: p.fraction)


_SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}
_BAR = re.compile(r"(\d+(?:\.\d+)?)([kMG]?)(?:/(\d+(?:\.\d+)?)([kMG]?) \[[^\]]*tok/s|tok \[)")
"""A tqdm bar counting tokens: `n/total [elapsed<left, rate tok/s...]`, or `ntok [` when it has no total."""


def progress(output: str, total: float | None = None) -> float:
    """The fraction done that a tqdm bar in `output` last showed (of `total` for a bar without one); 0 before."""
    matches = _BAR.findall(output)
    if not matches:
        return 0.0
    n, n_unit, of, of_unit = matches[-1]
    shown_total = float(of) * _SCALE[of_unit] if of else total
    return float(n) * _SCALE[n_unit] / shown_total if shown_total else 0.0


@dataclass(frozen=True)
class Outcome:
    """How a run that was to be killed ended."""

    killed: bool
    """False when it finished before the kill came."""
    output: str


def run_command(*args: object) -> str:
    """Run a command to its end; its output, or an AssertionError holding it when it fails."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def kill_during(*args: object, at: KillPoint, total: float | None = None) -> Outcome:
    """Run a command and SIGKILL it at `at` (if it is still running then); `total` for a bar that shows none."""
    process = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())
    output = bytearray()
    reader = threading.Thread(target=lambda: _drain(process, output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and progress(bytes(output[-4096:]).decode(errors="replace"), total) < at.fraction:
            assert time.monotonic() < deadline, f"no progress to {at.fraction:.2f} within {START_TIMEOUT_S} s"
            time.sleep(0.005)
        time.sleep(at.delay)
        process.kill()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    text = output.decode(errors="replace")
    killed = process.returncode == -9
    assert killed or process.returncode == 0, text
    return Outcome(killed, text)


def _drain(process: subprocess.Popen, output: bytearray) -> None:
    while chunk := process.stdout.read1(1 << 16):
        output.extend(chunk)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block, as the commands run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    """The test's environment on one thread, with the repository importable however pytest was started."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
