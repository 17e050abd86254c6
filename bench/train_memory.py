"""Peak RSS beside tokens/s and wall time for `saescope train` on a harvest, an .npy, and a harvest N times larger.

Each run is the whole command in a fresh process (`saescope train --activations X ...`), so the figures
include imports, loading, the held-out pass and writing the SAE. Peak RSS is the child's own maximum
resident set (wait4's ru_maxrss); tokens/s is the loop's rate from the last line of its training log.

Inputs, side by side, each run `--repeats` times in turn (medians reported):
  harvest   the harvest directory itself (bf16 shards, read through the bounded shuffle buffer)
  npy       the same rows as one float32 .npy file (the path the issue measured at 5.6 GB peak RSS)
  harvestxN a harvest listing every shard N times (links, not copies): N times the rows on disk, so the
            bound shows as an RSS that does not grow with the harvest's size

`--code NAME=DIR` adds another checkout of saescope (say `main=/tmp/main`) run on the same inputs, for a
before/after comparison in one run; DIR is put first on PYTHONPATH.

    python bench/train_memory.py --activations runs/bench/acts --tokens 393216 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from common import SAESCOPE_ENTRY, run_measured  # noqa: E402

from sae_core.activations import open_activations  # noqa: E402
from sae_core.harvest import read_manifest  # noqa: E402


def write_npy(harvest: Path, out: Path) -> Path:
    """The harvest's rows as one float32 .npy, written a shard at a time."""
    source = open_activations(harvest)
    array = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(source.n_rows, source.d_in))
    at = 0
    for chunk in source.chunks:
        array[at : at + chunk.rows] = chunk.load().float().numpy()
        at += chunk.rows
    array.flush()
    del array
    return out


def write_repeated(harvest: Path, times: int, out: Path) -> Path:
    """A harvest directory whose manifest lists every shard `times` times, each a symlink to the original."""
    manifest = read_manifest(harvest)
    out.mkdir()
    shards = []
    for copy in range(times):
        for entry in manifest["shards"]:
            name = f"r{copy}_{entry['file']}"
            (out / name).symlink_to((harvest / entry["file"]).resolve())
            shards.append({**entry, "file": name})
    rows = sum(e["rows"] for e in shards)
    (out / "manifest.json").write_text(json.dumps({**manifest, "shards": shards, "n_tokens": rows}))
    return out


def run_train(python: str, code: Path | None, activations: Path, out: Path, args: argparse.Namespace) -> dict:
    """One whole `saescope train` in a fresh process: wall time, peak RSS, loop tokens/s, held-out FVU."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [python, "-c", SAESCOPE_ENTRY, "train", "--activations", str(activations), "--out", str(out),
               "--features", str(args.features), "--k", str(args.k), "--batch-size", str(args.batch_size),
               "--tokens", str(args.tokens), "--holdout", str(args.holdout), "--device", "cpu", *args.extra]
    log = out.parent / f"{out.name}.log"
    # `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH: run in the checkout.
    run = run_measured(command, env, str(log), cwd=str(code) if code is not None else None)
    if run.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(command)} failed:\n  " + "\n  ".join(tail))
    return {"wall_s": run.wall_s, "peak_rss_gb": run.peak_rss_gb, **cli_figures(out)}


def cli_figures(out: Path) -> dict:
    """The loop's tokens/s (the training log's last figure) and the held-out FVU of a finished `saescope train`."""
    lines = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    rate = next(r["tokens_per_s"] for r in reversed(lines) if "tokens_per_s" in r)
    return {"tokens_per_s": rate, "fvu": json.loads((out / "metrics.json").read_text())["fvu"]}


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", type=Path, default=ROOT / "runs" / "bench" / "acts", help="harvest directory")
    parser.add_argument("--tokens", type=int, default=393216, help="training budget in rows")
    parser.add_argument("--holdout", type=int, default=20480)
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--times", type=int, default=4, help="the larger harvest holds this many copies of the rows")
    parser.add_argument("--inputs", default="harvest,npy,repeated", help="subset of harvest,npy,repeated")
    parser.add_argument("--code", action="append", default=[], help="NAME=DIR: another checkout run side by side")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further `saescope train` options")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    codes: list[tuple[str, Path | None]] = [("this", None)]
    codes += [(name, Path(path).resolve()) for name, path in (c.split("=", 1) for c in args.code)]
    wanted = args.inputs.split(",")
    with tempfile.TemporaryDirectory(prefix="saescope-train-memory-") as tmp:
        work = Path(tmp)
        inputs: dict[str, Path] = {}
        if "harvest" in wanted:
            inputs["harvest"] = args.activations.resolve()
        if "npy" in wanted:
            inputs["npy"] = write_npy(args.activations, work / "rows.npy")
        if "repeated" in wanted:
            inputs[f"harvestx{args.times}"] = write_repeated(args.activations, args.times, work / "repeated")
        sizes = {name: open_activations(path).n_rows for name, path in inputs.items()}
        print(f"{args.tokens} training rows, {args.holdout} held out, {args.features} features, k={args.k}, batch "
              f"{args.batch_size}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs", flush=True)
        runs: dict[tuple[str, str], list[dict]] = {}
        for repeat in range(args.repeats):  # interleaved, so the machine's load falls on every variant alike
            for code_name, code in codes:
                for name, path in inputs.items():
                    out = work / f"{code_name}-{name}-{repeat}"
                    result = run_train(sys.executable, code, path, out, args)
                    runs.setdefault((code_name, name), []).append(result)
                    print(f"  {code_name:>6} {name:<10} {result['wall_s']:6.1f} s  {result['peak_rss_gb']:5.2f} GB  "
                          f"{result['tokens_per_s']:7.0f} tok/s  FVU {result['fvu']:.4f}", flush=True)
    print(f"\nmedians over {args.repeats} runs")
    print(f"{'code':>6} {'input':<10} {'rows':>9} {'wall s':>7} {'peak RSS GB':>12} {'tok/s':>8} {'FVU':>7}")
    for (code_name, name), results in runs.items():
        m = medians(results)
        print(f"{code_name:>6} {name:<10} {sizes[name]:>9} {m['wall_s']:>7.1f} {m['peak_rss_gb']:>12.2f} "
              f"{m['tokens_per_s']:>8.0f} {m['fvu']:>7.4f}")


if __name__ == "__main__":
    main()
