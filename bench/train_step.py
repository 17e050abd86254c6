"""Time one TopK training step in each variant side by side: dense/sparse kernels x float32/bfloat16.

Usage: python bench/train_step.py [--d-in 576] [--features 8192] [--k 32] [--batch 4096] [--repeats 5] [--dead 0.01]
Prints the median milliseconds per step of each variant and its speed relative to the dense float32
step, the plain reference. Random Gaussian inputs: the step's cost does not depend on the data.

The ceiling: a sparse TopK step needs one dense product, the encoder's [batch, d_in] @ [d_in, features];
everything else touches only batch x k pairs. That one matmul, timed alone on the same threads in bf16 and in
float32, the faster of the two, is the fastest a step of this shape can be on this machine; each variant is
printed as a multiple of it. The step's top-k is timed alone too, by the C++ kernel and by PyTorch's path.

Without bf16 instructions (AMX or AVX512-BF16) the bf16 matmul and variants are skipped, with a note: PyTorch's
scalar fallback took 110 s for the ceiling's one matmul on an AVX2-only EPYC, and the bench seemed to hang.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from sae_core import kernels
from sae_core.activations import open_activations
from sae_core.allocator import keep_freed_memory
from sae_core.devices import cpu_has_bf16_instructions
from sae_core.saes import SAEConfig
from sae_core.saes.sparse import row_topk
from sae_core.train import TrainConfig, Trainer


def time_variant(args, dtype: str, sparse: bool, data_path: Path, out: Path) -> float:
    """Median seconds per step over `repeats` blocks of `steps` steps, after a warm-up block."""
    sae_cfg = SAEConfig(architecture="topk", d_in=args.d_in, d_sae=args.features, k=args.k)
    cfg = TrainConfig(tokens=10**9, batch_size=args.batch, dtype=dtype, sparse_kernels=sparse, progress=False)
    trainer = Trainer(sae_cfg, cfg, open_activations(data_path), out)
    trainer.initialize_from_data()
    x = open_activations(data_path).head(args.batch)
    every = round(1 / args.dead) if args.dead else 0

    def step() -> None:
        # Some features dead before every step, so the AuxK branch runs as it does in real training: a step
        # on this batch fires every feature, and one marking before the warm-up left none dead to time.
        if every:
            trainer.state.since_fired_F[::every] = trainer.dead_after
        trainer.step(x)

    step()
    blocks = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        blocks.append((time.perf_counter() - start) / args.steps)
    return statistics.median(blocks)


def matmul_seconds(args, dtype: torch.dtype) -> float:
    """Median seconds of the encoder's matmul alone at the step's shape, in `dtype`."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.d_in, generator=generator).to(dtype)
    w = torch.randn(args.d_in, args.features, generator=generator).to(dtype)
    torch.mm(x, w)
    blocks = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            torch.mm(x, w)
        blocks.append((time.perf_counter() - start) / args.steps)
    return statistics.median(blocks)


def topk_seconds(args, native: bool, dtype: torch.dtype) -> float:
    """Median seconds of the step's top-k alone (`row_topk` over pre-activations in `dtype`), by the C++ kernel or
    PyTorch."""
    pre = torch.randn(args.batch, args.features, generator=torch.Generator().manual_seed(0)).to(dtype)
    blocks = []
    with mock.patch.dict(os.environ, {"SAESCOPE_NATIVE": "1" if native else "0"}):
        row_topk(pre, args.k)
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.steps):
                row_topk(pre, args.k)
            blocks.append((time.perf_counter() - start) / args.steps)
    return statistics.median(blocks)


def variant_name(dtype: str, sparse: bool) -> str:
    return f"{'sparse' if sparse else 'dense'} {dtype}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dead", type=float, default=0.01,
                        help="fraction of features marked dead before each step (AuxK's share of the step); 0: none")
    parser.add_argument("--variants", default="dense-float32,dense-bfloat16,sparse-float32,sparse-bfloat16",
                        help="comma-separated KERNELS-DTYPE; the first is the baseline of the ratios")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/saescope-bench-step"))
    args = parser.parse_args()
    keep_freed_memory()  # as `saescope train` runs: the step's temporaries are not page-faulted in every step
    torch.set_num_threads(args.threads)
    args.tmp.mkdir(parents=True, exist_ok=True)
    data_path = args.tmp / "acts.npy"
    np.save(data_path, np.random.default_rng(0).standard_normal((args.batch, args.d_in), dtype=np.float32))
    dtypes = ("bfloat16", "float32") if cpu_has_bf16_instructions() else ("float32",)
    variants = [(v.split("-")[1], v.split("-")[0] == "sparse") for v in args.variants.split(",")]
    skipped = [variant_name(dtype, sparse) for dtype, sparse in variants if dtype not in dtypes]
    variants = [(dtype, sparse) for dtype, sparse in variants if dtype in dtypes]
    print(f"TopK step, d_in={args.d_in} features={args.features} k={args.k} batch={args.batch} "
          f"threads={args.threads} dead={args.dead}")
    if skipped:
        print(f"skipped {', '.join(skipped)} and the bf16 matmul: this CPU has no bf16 instructions (AMX or "
              "AVX512-BF16), and PyTorch's scalar bf16 fallback runs hundreds of times slower than float32")
    flops = 2 * args.batch * args.d_in * args.features
    matmuls = {dtype: matmul_seconds(args, getattr(torch, dtype)) for dtype in dtypes}
    for dtype, seconds in matmuls.items():
        print(f"{'1 matmul ' + dtype:25s} {seconds * 1000:8.1f} ms/step  {args.batch / seconds:9.0f} tok/s  "
              f"({flops / seconds / 1e9:.0f} GFLOP/s)")
    # The ceiling is the faster dtype's matmul: bf16 with AMX, but float32 where bf16 has no fast kernels.
    fastest = min(matmuls, key=matmuls.__getitem__)
    ceiling = matmuls[fastest]
    if kernels.library() is not None:
        for native in (True, False):
            seconds = topk_seconds(args, native, getattr(torch, fastest))
            print(f"{'top-k ' + ('C++ kernel' if native else 'PyTorch') + ' ' + fastest:25s} "
                  f"{seconds * 1000:8.1f} ms/step")
    base = None
    for dtype, sparse in variants:
        seconds = time_variant(args, dtype, sparse, data_path, args.tmp)
        base = base or seconds
        print(f"{variant_name(dtype, sparse):25s} {seconds * 1000:8.1f} ms/step  {args.batch / seconds:9.0f} tok/s  "
              f"x{base / seconds:.2f}  {seconds / ceiling:.1f}x the ceiling")


if __name__ == "__main__":
    main()
