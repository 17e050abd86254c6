"""keep_freed_memory: big blocks come from the heap and stay there when freed; glibc's defaults come back."""

import ctypes
import ctypes.util
import platform

import pytest
import torch

from sae_core.allocator import keep_freed_memory

BIG = 64 << 20
"""Above glibc's largest dynamic mmap threshold (32 MiB), so glibc's defaults always mmap such a block."""


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33+): what the heap holds and what is mapped outside it."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def glibc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    return libc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_big_blocks_stay_in_the_heap_when_kept_and_are_unmapped_on_free_by_default():
    libc = glibc()
    try:
        assert keep_freed_memory(False) is True
        libc.malloc_trim(0)  # start from a heap with no big free block to serve BIG from
        mapped = libc.mallinfo2().hblkhd
        big = torch.ones(BIG, dtype=torch.uint8)
        assert libc.mallinfo2().hblkhd >= mapped + BIG  # glibc's default: a fresh mapping...
        del big
        assert libc.mallinfo2().hblkhd < mapped + BIG  # ...unmapped again on free

        assert keep_freed_memory(True) is True
        big = torch.ones(BIG, dtype=torch.uint8)
        assert libc.mallinfo2().hblkhd < mapped + BIG  # served from the heap
        del big
        assert libc.mallinfo2().fordblks >= BIG  # freed, but kept in the process for the next batch
        assert int(torch.ones(BIG, dtype=torch.uint8).sum()) == BIG
    finally:
        assert keep_freed_memory(False) is True
