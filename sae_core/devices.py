"""Devices: CUDA when present, the CPU otherwise, through one code path.

On CUDA a batch is copied from pinned host memory with `non_blocking=True`, one batch ahead, so the copy
overlaps the previous step's kernels; on the CPU the same generator passes batches through untouched.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import torch


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: this rank's CUDA device when CUDA is present, else the CPU; `cuda` picks the local rank's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def prefetch_to(batches: Iterator[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """The batches on `device`; on CUDA the next batch's host-to-device copy is in flight during this one's step."""
    if device.type != "cuda":
        yield from batches
        return
    pending = _copy_to(next(batches), device)
    for batch in batches:
        ready, pending = pending, _copy_to(batch, device)
        yield ready
    yield pending


def _copy_to(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An asynchronous copy from pinned memory; a batch already on the device (streamed) stays put."""
    if batch.device == device:
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


BF16_PROBE = (512, 576, 2048)
"""The [m, k] @ [k, n] matmul timed to decide whether bf16 pays on a CPU with AVX512-BF16 but no AMX (about 5 ms
in float32 on 2 cores): SmolLM2's width, as in training's encoder and the model's own projections."""
BF16_MARGIN = 1.25
"""How much faster than float32 a bf16 matmul must run before `auto` gives up float32's precision for it."""


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run faster than float32 on `device`.

    AMX makes a bf16 matmul about 4x faster than float32 (Xeon with AMX). With no bf16 instructions at all,
    PyTorch falls back to a scalar loop: on an AVX2-only EPYC the same 4096 x 576 x 1536 matmul took 6.8 s in bf16
    against 0.11 s in float32. AVX512-BF16 without AMX can go either way, so there it is measured: on a Xeon whose
    virtual machine showed AVX512-BF16 but not AMX, 4096 x 576 x 8192 took 285 ms in bf16 against 175 ms in
    float32, and a TopK training step 541 against 320 ms.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if torch.cpu._is_amx_tile_supported():
        return True
    return torch.cpu._is_avx512_bf16_supported() and bf16_speedup() >= BF16_MARGIN


def cpu_has_bf16_instructions() -> bool:
    """AMX or AVX512-BF16: the instructions without which a bf16 matmul is a scalar fallback."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


@functools.cache
def bf16_speedup() -> float:
    """float32's time over bf16's for the `BF16_PROBE` matmul on this CPU, best of five each (once per process)."""
    m, k, n = BF16_PROBE
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    return _best_seconds(x, w) / _best_seconds(x.bfloat16(), w.bfloat16())


def _best_seconds(x: torch.Tensor, w: torch.Tensor, repeats: int = 5) -> float:
    """The fastest of `repeats` timed matmuls, after one untimed (the first call sets kernels up)."""
    torch.mm(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(x, w)
        times.append(time.perf_counter() - start)
    return min(times)


def slow_bf16_note(dtype: str, device: torch.device) -> str | None:
    """A warning for bfloat16 asked for by name where `fast_bf16` does not hold, else None.

    Without bf16 instructions PyTorch falls back to a scalar bf16 matmul: on an AVX2-only EPYC a
    4096 x 576 x 8192 matmul took 110 s in bf16 against 0.41 s in float32, and a million-feature recording with
    --dtype bfloat16 had read 128 tokens after ten minutes."""
    if dtype != "bfloat16" or fast_bf16(device):
        return None
    if device.type == "cpu" and cpu_has_bf16_instructions():
        return (f"a bf16 matmul ran {bf16_speedup():.2f}x as fast as float32 on this cpu (AVX512-BF16 without "
                f"AMX), short of the {BF16_MARGIN}x that auto asks before giving up float32's precision: float32 "
                "is the better choice here")
    return (f"bfloat16 on this {device.type} has no fast bf16 matmuls (no AMX or AVX512-BF16): it runs tens to "
            "hundreds of times slower than float32, which is the faster choice here")


def compute_dtype(name: str, device: torch.device) -> str:
    """`auto` as bfloat16 where `fast_bf16` holds and float32 elsewhere; any other name as given, for its user to check."""
    if name == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return name


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device's own backend (weights and Adam state stay float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
