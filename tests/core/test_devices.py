"""Devices: the same training code on the CPU and, where present, on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core.activations import open_activations
from sae_core.config import TrainConfig
from sae_core.devices import prefetch_to, resolve_device
from sae_core.distributed import Dist
from sae_core.saes import SAEConfig
from sae_core.train import train

CUDA = torch.cuda.is_available()


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_there():
    if CUDA:
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_prefetch_keeps_every_batch_in_order():
    batches = [torch.full((2, 3), float(i)) for i in range(5)]
    device = resolve_device("auto")
    got = list(prefetch_to(iter(batches), device))
    assert [b.device.type for b in got] == [device.type] * 5
    assert all(torch.equal(a.cpu(), b) for a, b in zip(got, batches))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device; the CPU path is the rest of the suite")
def test_cuda_trains_what_the_cpu_trains(tmp_path):
    x = np.random.default_rng(0).standard_normal((2048, 16), dtype=np.float32) + 1
    np.save(tmp_path / "acts.npy", x)
    sae_cfg = SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4)
    cfg = TrainConfig(tokens=256 * 20, batch_size=256, lr=3e-3, dtype="float32", progress=False,
                      dead_after_tokens=512)
    for device in ("cpu", "cuda"):
        train(sae_cfg, cfg, open_activations(tmp_path / "acts.npy"), tmp_path / device,
              dist=Dist(device=torch.device(device)))
    cpu, cuda = (load_file(tmp_path / d / "sae_weights.safetensors") for d in ("cpu", "cuda"))
    for name in cpu:
        assert torch.allclose(cpu[name], cuda[name], atol=1e-3, rtol=1e-3), name
