"""CPU kernels in C++ for the steps PyTorch's own CPU operators make slow, compiled on first use.

Where a CPU multiplies bf16 on AMX the encoder's matmul takes 16 ms of a TopK step and the top-k after it
more than twice that: PyTorch's CPU top-k copies and partially sorts every row. `row_topk` does it in two
vectorised passes per row (see row_topk.cpp). `decode_grads` gives both gradients of the sparse decode in one
pass over the pairs grouped by feature, in float32 (see decode_grads.cpp). The sources are compiled once per
machine with the system's C++ compiler (a few seconds) into one library in the user's cache, named by a hash of
the sources, the compiler and the CPU's flags, and loaded with ctypes: no PyTorch headers, no build step at
install. Without a compiler, on another device, or with SAESCOPE_NATIVE=0 the callers keep their PyTorch path,
which the tests hold the kernels equal to.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

KERNEL_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
"""The dtypes the kernels are built for, by the suffix of their C names."""
FALLBACK = "top-k selection and the sparse decode's gradients use PyTorch's slower CPU path"
SOURCES = tuple(Path(__file__).with_name(name) for name in ("row_topk.cpp", "decode_grads.cpp"))
HEADERS = (Path(__file__).with_name("common.h"),)
"""Included by the sources: part of the cache key, so an edit rebuilds the library."""
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread")
NATIVE_FLAGS = ("-march=native",)
"""Tried first, then without: the kernels vectorise for this CPU, and a compiler that lacks the flag still builds them."""


def enabled() -> bool:
    """Whether the C++ kernels may be used (SAESCOPE_NATIVE=0 turns them off, to compare or to debug)."""
    return os.environ.get("SAESCOPE_NATIVE", "1") != "0"


def cache_dir() -> Path:
    """Where compiled kernels are kept: $XDG_CACHE_HOME/saescope/kernels, else ~/.cache/saescope/kernels."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "saescope" / "kernels"


def compiler() -> str | None:
    """$CXX, else the first of c++, g++ and clang++ on the PATH."""
    return os.environ.get("CXX") or next(filter(None, map(shutil.which, ("c++", "g++", "clang++"))), None)


def cpu_flags() -> str:
    """The CPU's feature flags, so that a cache shared by two machines never loads code built for the other."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line for line in lines if line.startswith(("flags", "Features"))), "")


def build(cxx: str, out: Path) -> None:
    """Compile SOURCES into the shared library `out`, atomically (parallel test workers may race to build it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / out.name
        errors = []
        for extra in (NATIVE_FLAGS, ()):
            done = subprocess.run([cxx, *FLAGS, *extra, *map(str, SOURCES), "-o", str(partial)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(partial, out)
                return
            errors.append(done.stderr.strip()[-2000:])
        raise OSError(f"{cxx} could not compile {', '.join(source.name for source in SOURCES)}: {errors[-1]}")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None (with one warning) where they cannot be built."""
    cxx = compiler()
    if cxx is None:
        warnings.warn(f"no C++ compiler found (set CXX): {FALLBACK}", stacklevel=2)
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256("\0".join([*(path.read_text() for path in SOURCES + HEADERS), cxx, version,
                                        platform.machine(), cpu_flags(), " ".join(FLAGS)]).encode()).hexdigest()[:16]
        out = cache_dir() / f"kernels-{key}.so"
        if not out.exists():
            build(cxx, out)
        lib = ctypes.CDLL(str(out))
    except OSError as error:
        warnings.warn(f"{error}; {FALLBACK}", stacklevel=2)
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for dtype in KERNEL_DTYPES.values():
        getattr(lib, f"row_topk_{dtype}").argtypes = [pointer, size, size, size, pointer, pointer, size]
        getattr(lib, f"decode_grads_{dtype}").argtypes = [*[pointer] * 6, size, size, size, pointer, pointer, size]
    return lib


def row_topk(pre_NF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The k largest of every row of pre_NF (float32 values, int64 columns, unordered); None where the kernel does
    not apply (another device or dtype, k out of range, no compiler), for the caller's own path.

    The values carry no gradient: a caller that needs one gathers them from its tensor at the columns."""
    if not (enabled() and pre_NF.device.type == "cpu" and pre_NF.dim() == 2 and pre_NF.dtype in KERNEL_DTYPES
            and 0 < k <= pre_NF.shape[1]):
        return None
    lib = library()
    if lib is None:
        return None
    n, d = pre_NF.shape
    pre_NF = pre_NF.detach().contiguous()
    vals_NK = torch.empty(n, k)
    idx_NK = torch.empty(n, k, dtype=torch.int64)
    getattr(lib, f"row_topk_{KERNEL_DTYPES[pre_NF.dtype]}")(pre_NF.data_ptr(), n, d, k, vals_NK.data_ptr(),
                                                             idx_NK.data_ptr(), torch.get_num_threads())
    return vals_NK, idx_NK


def decode_grads(grad_ND: torch.Tensor, table_FD: torch.Tensor, vals_M: torch.Tensor, order_M: torch.Tensor,
                 rows_M: torch.Tensor, offsets_F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both gradients of the sparse decode `sum_m vals[m] * table[cols[m]]` per row, in float32: the gradient of each
    value (its row's gradient . its table row) and of the table (per feature, the values' sum of gradient rows).

    The pairs come grouped by feature (`sparse.FeatureOrder`): pair `order_M[i]` is the i-th, on row `rows_M[i]`;
    feature f's pairs start at `offsets_F[f]`. None where the kernel does not apply (another device, dtypes that
    differ or that it was not built for, no compiler), for the caller's own path."""
    if not (enabled() and grad_ND.device.type == "cpu" and grad_ND.dtype == table_FD.dtype
            and grad_ND.dtype in KERNEL_DTYPES and grad_ND.dim() == table_FD.dim() == 2
            and grad_ND.shape[1] == table_FD.shape[1] and len(offsets_F) == len(table_FD)
            and len(vals_M) == len(order_M) == len(rows_M)):
        return None
    lib = library()
    if lib is None:
        return None
    grad_ND, table_FD = grad_ND.contiguous(), table_FD.contiguous()
    vals_M, order_M, rows_M, offsets_F = (vals_M.float().contiguous(), order_M.long().contiguous(),
                                          rows_M.long().contiguous(), offsets_F.long().contiguous())
    grad_vals_M = torch.empty(len(vals_M))
    grad_table_FD = torch.empty(table_FD.shape)
    n_feat, d = table_FD.shape
    getattr(lib, f"decode_grads_{KERNEL_DTYPES[grad_ND.dtype]}")(
        grad_ND.data_ptr(), table_FD.data_ptr(), vals_M.data_ptr(), order_M.data_ptr(), rows_M.data_ptr(),
        offsets_F.data_ptr(), n_feat, len(order_M), d, grad_vals_M.data_ptr(), grad_table_FD.data_ptr(),
        torch.get_num_threads())
    return grad_vals_M, grad_table_FD
