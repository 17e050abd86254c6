"""How glibc's malloc treats the large blocks a batch loop frees and allocates again.

Every batch of a harvest, training or recording pass allocates the same big temporaries (a recording
batch's pre-activations alone are 512 MB). glibc serves blocks over its mmap threshold with fresh
mappings and unmaps them on free, so each batch page-faults hundreds of megabytes in again, and it trims
the heap top back to the OS too. Keeping freed memory in the process removes that; `bench/record.py`
measures both settings side by side. Peak memory is unchanged (the blocks are reused, not added to).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536
GLIBC_TRIM_THRESHOLD = 128 * 1024
"""glibc's defaults, restored by `keep_freed_memory(False)`."""


def keep_freed_memory(keep: bool = True) -> bool:
    """Serve large blocks from the heap and never trim it (or restore glibc's defaults); False off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_max, trim = (0, 2**31 - 1) if keep else (GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD)
    return bool(mallopt(M_MMAP_MAX, mmap_max)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
