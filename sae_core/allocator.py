"""How glibc's malloc treats the large blocks a batch loop frees and allocates again.

Every batch of a harvest, training or recording pass allocates the same big temporaries (a recording
batch's pre-activations alone are 512 MB). glibc serves blocks over its mmap threshold with fresh
mappings and unmaps them on free, so each batch page-faults hundreds of megabytes in again, and it trims
the heap top back to the OS too. Keeping freed memory in the process removes that; `bench/record.py`
measures both settings side by side. In such a loop peak memory is unchanged (the blocks are reused, not
added to); work whose blocks vary in size runs on glibc's defaults instead (`freed_memory_returned`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536
GLIBC_TRIM_THRESHOLD = 128 * 1024
"""glibc's defaults, restored by `keep_freed_memory(False)`."""


_keeping = False
"""Whether keep_freed_memory(True) is in force."""


def keep_freed_memory(keep: bool = True) -> bool:
    """Serve large blocks from the heap and never trim it (or restore glibc's defaults); False off glibc."""
    global _keeping
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_max, trim = (0, 2**31 - 1) if keep else (GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD)
    done = bool(mallopt(M_MMAP_MAX, mmap_max)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
    _keeping = keep and done
    return done


@contextmanager
def freed_memory_returned() -> Iterator[None]:
    """glibc's defaults for the block, then the batch-loop setting again if it was in force.

    For work that is not one loop over same-sized temporaries: a recording's finishing stages (logit effects,
    neighbours, co-activation) allocate blocks of varying sizes between the small results they keep. On a heap
    that never maps large blocks apart nor trims, freed blocks were not reused there and a 262,144-feature
    recording grew past 18 GB in its logit stage, where it needs about 4 GB; not every run, as it depends on
    which thread frees what.
    """
    if not _keeping:
        yield
        return
    keep_freed_memory(False)
    try:
        yield
    finally:
        keep_freed_memory(True)
