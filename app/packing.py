"""Compact byte layouts for example windows: int32 token ids and float16 activations, little-endian."""

from __future__ import annotations

import numpy as np

IDS = np.dtype("<i4")
ACTS = np.dtype("<f2")


def pack_ids(ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(ids, dtype=IDS).tobytes()


def unpack_ids(blob: bytes) -> list[int]:
    return np.frombuffer(blob, dtype=IDS).tolist()


def pack_acts(acts: np.ndarray) -> bytes:
    return np.ascontiguousarray(acts, dtype=ACTS).tobytes()


def unpack_acts(blob: bytes) -> list[float]:
    return np.frombuffer(blob, dtype=ACTS).astype(np.float32).tolist()
