import platform

import pytest
import torch

from sae_core.allocator import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_malloc_settings_switch_on_and_back_and_memory_still_works():
    try:
        assert keep_freed_memory(True) is True
        big = torch.ones(64 << 20, dtype=torch.uint8)  # above glibc's largest mmap threshold
        del big
        assert int(torch.ones(64 << 20, dtype=torch.uint8).sum()) == 64 << 20
    finally:
        assert keep_freed_memory(False) is True
