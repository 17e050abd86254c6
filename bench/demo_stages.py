"""Wall and CPU time of each stage of `saescope demo`, read from its output as it runs.

The demo's budget (issue 15) is at most 15 minutes from a fresh clone to serving on 2 cores. On a shared
machine wall time depends on the load, so the CPU seconds the demo process used (all its threads) are
printed beside it: on an idle 2-core machine a stage takes about its CPU time over the cores it keeps busy.
Run: .venv/bin/python bench/demo_stages.py -- [saescope demo options, e.g. --out /tmp/demo --no-serve]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    options = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else ["--no-serve"]
    command = [str(Path(sys.executable).parent / "saescope"), "demo", *options]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    marks: list[tuple[str, float, float]] = []
    cpu = 0.0
    for line in process.stdout:
        cpu = cpu_seconds(process.pid) if process.poll() is None else cpu
        elapsed = time.monotonic() - started
        if line.startswith(("[", "serving at")) or "feature pages" in line:
            marks.append((line.strip()[:100], elapsed, cpu))
            print(f"{elapsed:8.1f} s wall {cpu:8.1f} s cpu  {line.rstrip()[:100]}", flush=True)
            if line.startswith("serving at"):
                process.terminate()
    code = process.wait()
    print(f"exit {code}; total {time.monotonic() - started:.1f} s wall, {cpu:.1f} s cpu (to the last line read)")
    for (label, wall, used), (_, next_wall, next_used) in pairwise(marks):
        print(f"  {next_wall - wall:8.1f} s wall {next_used - used:8.1f} s cpu  {label}")


if __name__ == "__main__":
    main()
