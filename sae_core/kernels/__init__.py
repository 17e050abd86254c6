"""CPU kernels in C++ for the steps PyTorch's own CPU operators make slow, compiled on first use.

Where a CPU multiplies bf16 on AMX the encoder's matmul takes 16 ms of a TopK step and the top-k after it
more than twice that: PyTorch's CPU top-k copies and partially sorts every row. `row_topk` does it in two
vectorised passes per row (see row_topk.cpp). The source is compiled once per machine with the system's C++
compiler (about a second) into the user's cache, named by a hash of the source, the compiler and the CPU's
flags, and loaded with ctypes: no PyTorch headers, no build step at install. Without a compiler, on another
device, or with SAESCOPE_NATIVE=0 the callers keep their PyTorch path, which the tests hold the kernel equal to.
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

SOURCE = Path(__file__).with_name("row_topk.cpp")
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
    """Compile SOURCE into the shared library `out`, atomically (parallel test workers may race to build it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        partial = Path(tmp) / out.name
        errors = []
        for extra in (NATIVE_FLAGS, ()):
            done = subprocess.run([cxx, *FLAGS, *extra, str(SOURCE), "-o", str(partial)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(partial, out)
                return
            errors.append(done.stderr.strip()[-2000:])
        raise OSError(f"{cxx} could not compile {SOURCE.name}: {errors[-1]}")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None (with one warning) where they cannot be built."""
    cxx = compiler()
    if cxx is None:
        warnings.warn("no C++ compiler found (set CXX): top-k selection uses PyTorch's slower CPU path", stacklevel=2)
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256("\0".join([SOURCE.read_text(), cxx, version, platform.machine(), cpu_flags(),
                                        " ".join(FLAGS)]).encode()).hexdigest()[:16]
        out = cache_dir() / f"row_topk-{key}.so"
        if not out.exists():
            build(cxx, out)
        lib = ctypes.CDLL(str(out))
    except OSError as error:
        warnings.warn(f"{error}; top-k selection uses PyTorch's slower CPU path", stacklevel=2)
        return None
    pointers = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                ctypes.c_int64]
    for name in ("row_topk_float32", "row_topk_bfloat16"):
        getattr(lib, name).argtypes = pointers
    return lib


KERNEL_DTYPES = {torch.float32: "row_topk_float32", torch.bfloat16: "row_topk_bfloat16"}


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
    getattr(lib, KERNEL_DTYPES[pre_NF.dtype])(pre_NF.data_ptr(), n, d, k, vals_NK.data_ptr(), idx_NK.data_ptr(),
                                              torch.get_num_threads())
    return vals_NK, idx_NK
