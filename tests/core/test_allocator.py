"""keep_freed_memory: big blocks come from the heap and stay there when freed; glibc's defaults come back, for good
or for a block (freed_memory_returned)."""

import ctypes
import ctypes.util
import platform

import pytest
import torch

from sae_core import allocator
from sae_core.allocator import freed_memory_returned, keep_freed_memory

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


GLIBC_ONLY = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt only")


def mapped_apart(libc) -> bool:
    """Whether a block larger than all the heap's free memory is served by a mapping of its own while it lives
    (larger, so that no free block left by earlier tests can serve it; never written, so it costs no memory)."""
    size = libc.mallinfo2().fordblks + BIG
    mapped = libc.mallinfo2().hblkhd
    block = torch.empty(size, dtype=torch.uint8)
    apart = libc.mallinfo2().hblkhd >= mapped + size
    del block
    return apart


@GLIBC_ONLY
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


@GLIBC_ONLY
def test_a_block_runs_on_glibcs_defaults_and_the_batch_setting_comes_back_after():
    libc = glibc()
    try:
        assert keep_freed_memory(True) is True
        assert not mapped_apart(libc)
        with freed_memory_returned():
            assert mapped_apart(libc)
            assert not allocator._keeping
        assert allocator._keeping and not mapped_apart(libc)
        with pytest.raises(RuntimeError), freed_memory_returned():
            raise RuntimeError("a failing stage")
        assert allocator._keeping  # put back however the block ends
    finally:
        assert keep_freed_memory(False) is True


@GLIBC_ONLY
def test_without_the_batch_setting_the_block_leaves_glibcs_defaults_alone():
    libc = glibc()
    assert keep_freed_memory(False) is True
    with freed_memory_returned():
        assert mapped_apart(libc)
    assert not allocator._keeping and mapped_apart(libc)
