"""Devices: CUDA when present, the CPU otherwise, through one code path.

On CUDA a batch is copied from pinned host memory with `non_blocking=True`, one batch ahead, so the copy
overlaps the previous step's kernels; on the CPU the same generator passes batches through untouched.
"""

from __future__ import annotations

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


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run faster than float32 on `device`.

    A CPU needs AMX or AVX512-BF16: with them a bf16 matmul ran about 4x faster than float32 (Xeon with AMX),
    while on an AVX2-only EPYC (no bf16 instructions) the same 4096 x 576 x 1536 matmul took 6.8 s in bf16
    against 0.11 s in float32, so bf16 there would make training and the demo's forward passes 60x slower.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, probe, lambda: False)()
                   for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


def slow_bf16_note(dtype: str, device: torch.device) -> str | None:
    """A warning for bfloat16 asked for by name where `fast_bf16` does not hold, else None.

    Without bf16 instructions PyTorch falls back to a scalar bf16 matmul: on an AVX2-only EPYC a
    4096 x 576 x 8192 matmul took 110 s in bf16 against 0.41 s in float32, and a million-feature recording with
    --dtype bfloat16 had read 128 tokens after ten minutes."""
    if dtype != "bfloat16" or fast_bf16(device):
        return None
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
