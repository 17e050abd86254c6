"""Training throughput and peak memory at 16k and 131k features, on CUDA when present (else the CPU).

One command, on one GPU or several:

    python bench/train_scale.py                                   # 16384 and 131072 features, TopK k=32
    torchrun --nproc-per-node 8 bench/train_scale.py              # data parallel over 8 GPUs
    torchrun --nproc-per-node 8 bench/train_scale.py --shard-features --features 1048576
    python bench/train_scale.py --device cpu --features 4096 --steps 40   # what a CPU manages

Each size runs saescope's real training loop (`Trainer.run`: the seeded batch stream, the pinned,
non-blocking copy to the device, bf16 autocast, fused Adam, decoder normalisation, AuxK with a quarter
of the features dead) on random Gaussian rows held in host memory; the cost of a step does not depend on
the data. Figures: global tokens/s (median over segments after warm-up), peak device memory (CUDA's
max_memory_allocated on rank 0; on the CPU the process's peak resident set), and the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import tempfile
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import StepClock  # noqa: E402

from sae_core.activations import ActivationSource  # noqa: E402
from sae_core.config import TrainConfig  # noqa: E402
from sae_core.distributed import Dist, close_distributed, init_distributed  # noqa: E402
from sae_core.saes import SAEConfig  # noqa: E402
from sae_core.train import Trainer  # noqa: E402

WARMUP_STEPS = 5


def command() -> str:
    """The command line that produced these figures, torchrun included."""
    argv = " ".join(shlex.quote(a) for a in sys.argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"torchrun --nproc-per-node {world} {argv}" if world > 1 else f"python {argv}"


def peak_memory_gib(dist: Dist) -> float:
    """Peak device memory of this process in GiB (CPU: peak resident set, which includes the host data)."""
    if dist.device.type == "cuda":
        return torch.cuda.max_memory_allocated(dist.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(args: argparse.Namespace, features: int, dist: Dist, rows_ND: torch.Tensor, out: Path) -> dict:
    """Train `args.steps` steps at one dictionary size; tokens/s and peak memory."""
    sae_cfg = SAEConfig(architecture="topk", d_in=args.d_in, d_sae=features, k=args.k)
    cfg = TrainConfig(tokens=args.steps * args.batch, batch_size=args.batch, dtype=args.dtype, progress=False,
                      log_every=10**9, checkpoint_every_s=float("inf"), checkpoint_every_tokens=0,
                      dead_after_tokens=args.batch * 10**6)
    trainer = Trainer(sae_cfg, cfg, ActivationSource.in_memory(rows_ND), out / str(features), dist,
                      args.shard_features)
    trainer.state.since_fired_F[::4] = trainer.dead_after  # a quarter dead, so the AuxK branch runs
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)
    clock = StepClock()

    def tick(step: int) -> None:
        if dist.device.type == "cuda":
            torch.cuda.synchronize(dist.device)
        clock.tick()

    trainer.run(on_step=tick)
    rate = clock.tokens_per_s(args.batch, WARMUP_STEPS, args.segment)
    return {"features": features, "tokens_per_s": round(rate["median"]), "tokens_per_s_min": round(rate["min"]),
            "peak_memory_gib": round(peak_memory_gib(dist), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="16384,131072", help="comma-separated dictionary sizes")
    parser.add_argument("--d-in", type=int, default=2304, help="activation width (2304: Gemma 2 2B's residual)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096, help="global rows per step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--segment", type=int, default=10, help="steps per timed segment")
    parser.add_argument("--rows", type=int, default=1 << 18, help="distinct rows held in host memory")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shard-features", action="store_true", help="split the features over the ranks")
    args = parser.parse_args()
    dist = init_distributed(args.device)
    try:
        if dist.is_main and dist.device.type != "cuda":
            print("note: no CUDA device in use; these are CPU figures, not the GPU figures issue 8 asks for",
                  file=sys.stderr)
        rows_ND = torch.randn(args.rows, args.d_in, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as tmp:
            results = [measure(args, int(f), dist, rows_ND, Path(tmp)) for f in args.features.split(",")]
        if dist.is_main:
            device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu"
            summary = {"command": command(), "device": device, "processes": dist.world, "d_in": args.d_in,
                       "k": args.k, "batch": args.batch, "dtype": args.dtype, "shard_features": args.shard_features,
                       "torch_threads": torch.get_num_threads(), "results": results}
            print(json.dumps(summary, indent=2))
    finally:
        close_distributed()


if __name__ == "__main__":
    main()
