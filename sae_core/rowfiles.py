"""Row ranges of a 2-D array stored contiguously in a .npy or .safetensors file, read by position.

Training reads a harvest in small random pieces (see shuffle.py). Each piece is read with one positioned
read into a fresh tensor, never through a memory map: pages of a mapped file count in the process's
resident memory until the kernel evicts them, so mapping a harvest larger than memory would make peak RSS
grow with the harvest. A read leaves those pages in the kernel's page cache instead, outside the process.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
"""The safetensors dtype names of the floating-point types activations come in."""


class RowFileError(ValueError):
    """A file whose layout does not hold the expected array: the message names the file."""


@dataclass(frozen=True)
class RowFile:
    """An [n_rows, d] row-major array of one dtype, `offset` bytes into a file."""

    path: Path
    offset: int
    n_rows: int
    d: int
    dtype: torch.dtype

    @property
    def row_bytes(self) -> int:
        return self.d * self.dtype.itemsize

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a new [stop - start, d] tensor, read with one positioned read."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows [{start}, {stop}) of {self.path} ({self.n_rows} rows)")
        out = torch.empty(stop - start, self.d, dtype=self.dtype)
        view = out.view(torch.uint8).numpy().reshape(-1).data
        with open(self.path, "rb", buffering=0) as f:
            got = os.preadv(f.fileno(), [view], self.offset + start * self.row_bytes)
        if got != len(view):
            raise RowFileError(f"{self.path}: truncated, rows [{start}, {stop}) lie past its end")
        return out


def npy_rows(path: Path) -> RowFile:
    """The array of a .npy file (C order, floating point) without reading its data."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise RowFileError(f"{path}: unreadable .npy file ({err})") from None
    if array.dtype.kind != "f":
        raise RowFileError(f"{path}: activations must be floating point, got {array.dtype}")
    if array.ndim != 2:
        raise RowFileError(f"{path}: activations must be 2-D [rows, d], got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise RowFileError(f"{path}: the array is stored in Fortran order; save it in C order (np.ascontiguousarray)")
    if not array.dtype.isnative:
        raise RowFileError(f"{path}: the array's byte order is not this machine's; save it in native order")
    dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
    return RowFile(path, int(array.offset), array.shape[0], array.shape[1], dtype)


def safetensors_rows(path: Path, name: str) -> RowFile:
    """Tensor `name` of a .safetensors file, from its JSON header alone."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError) as err:
        raise RowFileError(f"{path}: unreadable safetensors file ({err})") from None
    entry = header.get(name)
    if not isinstance(entry, dict):
        found = ", ".join(k for k in header if k != "__metadata__") or "none"
        raise RowFileError(f"{path}: no tensor named {name!r} (found {found})")
    shape, dtype = entry.get("shape"), SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
    if dtype is None:
        raise RowFileError(f"{path}: {name} must be floating point, got {entry.get('dtype')}")
    if not isinstance(shape, list) or len(shape) != 2:
        raise RowFileError(f"{path}: {name} must be 2-D [rows, d], got shape {shape}")
    return RowFile(path, 8 + length + int(entry["data_offsets"][0]), int(shape[0]), int(shape[1]), dtype)
