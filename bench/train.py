"""Train the same TopK SAE with saescope, a plain PyTorch loop, SAELens and sparsify; print speed and quality.

One command, side by side on one machine: every tool gets the same real SmolLM2 layer-6 residual
activations, the same batches in the same order, the same shape (TopK, k=32, 8192 features, batch 4096)
and the same token budget, each in a fresh process; each is scored on the same held-out rows (text no
training row came from) through its own encode/decode. Figures: tokens/s (median over timed segments
after warm-up), FVU (sum of squared errors / sum of squared deviations from the held-out mean), L0, dead
fraction (never fires on the held-out rows), the whole process's wall time (start to exit: imports,
loading, training, saving, scoring) and its own peak RSS, and saescope's ratios to each.

Tools: `saescope` (the library's Trainer inside the harness), `cli` (the `saescope train` command a user
runs, on the same rows with the same rows held out; its own data order and its own held-out metrics),
`reference` (a plain fp32 loop), `reference-bf16` (the same loop under bf16 autocast with fused Adam),
`saelens`, `sparsify`. `--allocator keep` gives every process the glibc setting saescope's CLI uses.

    python bench/train.py                       # all four tools, default budget
    python bench/train.py --tokens 262144 --tools saescope,sparsify
    python bench/train.py --curve               # saescope's FVU against training tokens
    python bench/train.py --activations DIR     # a harvest directory or an [N, d] .npy

SAELens and sparsify run under the peer environment built by `bash bench/setup_peers.sh`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SAESCOPE_ENTRY, run_measured

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER_TOOLS = ("saelens", "sparsify")
ALL_TOOLS = ("cli", "saescope", "reference", "reference-bf16", "saelens", "sparsify")
DEFAULT_ACTS = ROOT / "runs" / "bench" / "acts"
DEFAULT_CURVE = (65536, 131072, 262144, 524288, 1048576)


def load_rows(path: Path) -> np.ndarray:
    """Activation rows as float32 [N, d] from a .npy array or a harvest directory, in stored order."""
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32, copy=False)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"error: {path} is neither a .npy file nor a harvest directory (no manifest.json)")
    from safetensors.torch import load_file

    manifest = json.loads(manifest_path.read_text())
    shards = [load_file(path / shard["file"])["activations"].float().numpy() for shard in manifest["shards"]]
    return np.concatenate(shards)


def ensure_default_activations(path: Path, tokens: int) -> None:
    """Harvest the default activations (SmolLM2 layer 6 over the demo corpus) the first time they are needed."""
    if path != DEFAULT_ACTS or (path / "manifest.json").is_file():
        return
    from sae_core.config import HarvestConfig
    from sae_core.harvest import harvest

    print(f"no activations at {path}; harvesting {tokens} rows of SmolLM2 layer 6 once", flush=True)
    harvest(HarvestConfig(tokens=tokens, model_dtype="bfloat16"), path, resume=True)


def split(rows_ND: np.ndarray, heldout_rows: int, workdir: Path) -> tuple[Path, Path]:
    """Write the training rows and the last `heldout_rows` rows (unseen text) as two .npy files."""
    if heldout_rows >= len(rows_ND) // 2:
        raise SystemExit(f"error: {len(rows_ND)} rows are too few to hold out {heldout_rows}")
    train, heldout = workdir / "train.npy", workdir / "heldout.npy"
    np.save(train, rows_ND[:-heldout_rows])
    np.save(heldout, rows_ND[-heldout_rows:])
    return train, heldout


def run_tool(tool: str, python: str, data: tuple[Path, Path], tokens: int, args: argparse.Namespace,
             workdir: Path) -> dict:
    """Train and score one tool in its own process; its JSON result."""
    out = workdir / f"{tool}-{tokens}.json"
    if tool == "cli":
        command = [python, "-c", SAESCOPE_ENTRY, "train", "--activations", str(args.activations), "--holdout",
                   str(args.heldout_rows), "--tokens", str(tokens), "--batch-size", str(args.batch_size), "--features",
                   str(args.features), "--k", str(args.k), "--seed", str(args.seed), "--device", "cpu",
                   "--out", str(workdir / "cli-sae")]
    else:
        command = [python, str(BENCH / "run_trainer.py"), tool, "--train", str(data[0]), "--heldout", str(data[1]),
                   "--tokens", str(tokens), "--batch-size", str(args.batch_size), "--features", str(args.features),
                   "--k", str(args.k), "--seed", str(args.seed), "--warmup-steps", str(args.warmup_steps),
                   "--segment-steps", str(args.segment_steps), "--allocator", args.allocator, "--out", str(out)]
    print(f"--- {tool}: {tokens} tokens", flush=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    log = workdir / f"{tool}.log"
    run = run_measured(command, env, str(log))
    if run.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        print(f"{tool} failed (exit {run.returncode}):\n  " + "\n  ".join(tail), flush=True)
        return {"tool": tool, "error": tail[-1] if tail else f"exit {run.returncode}"}
    result = cli_result(workdir / "cli-sae", tokens) if tool == "cli" else json.loads(out.read_text())
    result.update(process_s=run.wall_s, peak_rss_gb=run.peak_rss_gb)
    print(f"    {result['tokens_per_s']['median']:.0f} tok/s, FVU {result['fvu']:.4f}, L0 {result['l0']:.1f}, "
          f"dead {result['dead_fraction']:.3f}, process {run.wall_s:.1f} s, peak RSS {run.peak_rss_gb:.2f} GB",
          flush=True)
    return result


def cli_result(out: Path, tokens: int) -> dict:
    """A finished `saescope train`'s figures: the log's last loop rate and its held-out metrics.json."""
    lines = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    rate = next(r["tokens_per_s"] for r in reversed(lines) if "tokens_per_s" in r)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"tool": "cli", "tokens": tokens, "tokens_per_s": {"median": rate, "min": rate, "max": rate},
            **{k: metrics[k] for k in ("fvu", "l0", "dead_fraction")}}


def interpreter(tool: str, peer_python: Path) -> str | None:
    """The Python that runs `tool`, or None when the peer environment is missing."""
    if tool not in PEER_TOOLS:
        return sys.executable
    return str(peer_python) if peer_python.is_file() else None


def comparison_table(results: list[dict]) -> str:
    """Figures per tool, then saescope's speed ratio and FVU difference to each."""
    lines = [f"{'tool':<14} {'tok/s':>9} {'(min-max)':>15} {'FVU':>8} {'L0':>6} {'dead':>6} {'process s':>9} "
             f"{'RSS GB':>7}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['tool']:<14} failed: {r['error']}")
            continue
        t = r["tokens_per_s"]
        lines.append(f"{r['tool']:<14} {t['median']:>9.0f} {t['min']:>7.0f}-{t['max']:<7.0f} {r['fvu']:>8.4f} "
                     f"{r['l0']:>6.1f} {r['dead_fraction']:>6.3f} {r['process_s']:>9.1f} {r['peak_rss_gb']:>7.2f}")
    for name in ("cli", "saescope"):
        ours = next((r for r in results if r["tool"] == name and "error" not in r), None)
        if ours is None:
            continue
        lines.append("")
        for r in results:
            if r["tool"] in ("cli", "saescope") or "error" in r:
                continue
            speed = ours["tokens_per_s"]["median"] / r["tokens_per_s"]["median"]
            lines.append(f"{name}/{r['tool']:<14} loop x{speed:.2f}  process x{r['process_s'] / ours['process_s']:.2f}  "
                         f"RSS x{ours['peak_rss_gb'] / r['peak_rss_gb']:.2f}  FVU {ours['fvu']:.4f} vs {r['fvu']:.4f}")
    return "\n".join(lines)


def curve_table(results: list[dict]) -> str:
    """saescope's held-out FVU, L0 and dead fraction for each training budget."""
    lines = [f"{'tokens':>9} {'FVU':>8} {'L0':>6} {'dead':>6} {'tok/s':>8} {'wall s':>7}"]
    for r in results:
        if "error" in r:
            lines.append(f"failed: {r['error']}")
            continue
        lines.append(f"{r['tokens']:>9} {r['fvu']:>8.4f} {r['l0']:>6.1f} {r['dead_fraction']:>6.3f} "
                     f"{r['tokens_per_s']['median']:>8.0f} {r['wall_s']:>7.0f}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", type=Path, default=DEFAULT_ACTS,
                        help="harvest directory or [N, d] .npy (default: harvested on first use)")
    parser.add_argument("--harvest-tokens", type=int, default=300_000, help="rows harvested for the default")
    parser.add_argument("--tokens", type=int, default=262144, help="training budget per tool, in rows")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset of "
                        + ",".join(ALL_TOOLS))
    parser.add_argument("--curve", action="store_true", help="saescope alone at each of --curve-tokens")
    parser.add_argument("--curve-tokens", default=",".join(map(str, DEFAULT_CURVE)))
    parser.add_argument("--heldout-rows", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps not timed at the start")
    parser.add_argument("--segment-steps", type=int, default=5, help="steps per timed segment")
    parser.add_argument("--allocator", choices=("keep", "default"), default="keep",
                        help="glibc malloc for the harness's processes: keep freed memory (as saescope's CLI) or not")
    parser.add_argument("--peer-python", type=Path,
                        default=Path(os.environ.get("BENCHENV", "/work/benchenv")) / "bin" / "python")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "train_results.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(ALL_TOOLS))
    if unknown:
        raise SystemExit(f"error: unknown tool(s) {', '.join(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    ensure_default_activations(args.activations, args.harvest_tokens)
    rows_ND = load_rows(args.activations)
    print(f"{len(rows_ND)} rows of width {rows_ND.shape[1]} from {args.activations}; "
          f"{args.heldout_rows} held out; batch {args.batch_size}, {args.features} features, k={args.k}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="saescope-bench-") as tmp:
        workdir = Path(tmp)
        data = split(rows_ND, args.heldout_rows, workdir)
        del rows_ND
        if args.curve:
            budgets = [int(t) for t in args.curve_tokens.split(",")]
            results = [run_tool("saescope", sys.executable, data, t, args, workdir) for t in budgets]
            table = curve_table(results)
        else:
            results = []
            for tool in tools:
                python = interpreter(tool, args.peer_python)
                if python is None:
                    print(f"--- {tool}: skipped, no peer environment at {args.peer_python} "
                          "(build it with: bash bench/setup_peers.sh)", flush=True)
                    continue
                results.append(run_tool(tool, python, data, args.tokens, args, workdir))
            table = comparison_table(results)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                   indent=2))
    print(f"\nresults -> {args.out}")


if __name__ == "__main__":
    main()
