"""Devices: the same training code on the CPU and, where present, on CUDA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core import devices
from sae_core.activations import open_activations
from sae_core.config import TrainConfig
from sae_core.devices import compute_dtype, prefetch_to, resolve_device, slow_bf16_note
from sae_core.distributed import Dist
from sae_core.saes import SAEConfig
from sae_core.train import Trainer, train
from tests.conftest import pretend_cpu

CUDA = torch.cuda.is_available()


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_there():
    if CUDA:
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("amx", "avx512_bf16", "speedup", "want"),
                         [(True, False, 0.5, "bfloat16"), (False, True, 2.0, "bfloat16"),
                          (False, True, 0.7, "float32"), (False, False, 2.0, "float32")])
def test_auto_computes_in_bf16_only_on_a_cpu_with_fast_bf16_matmuls(monkeypatch, amx, avx512_bf16, speedup, want):
    # AMX is trusted as it is; AVX512-BF16 alone goes by the probe's measurement; no bf16 instructions never bf16.
    pretend_cpu(monkeypatch, amx, avx512_bf16, bf16_speedup=speedup)
    assert compute_dtype("auto", torch.device("cpu")) == want
    assert [compute_dtype(name, torch.device("cpu")) for name in ("bfloat16", "float32")] == ["bfloat16", "float32"]


def test_bfloat16_by_name_is_doubted_only_on_a_cpu_without_fast_bf16(monkeypatch):
    cpu = torch.device("cpu")
    pretend_cpu(monkeypatch, amx=False)
    assert "slower than float32" in slow_bf16_note("bfloat16", cpu)
    assert slow_bf16_note("float32", cpu) is None and slow_bf16_note("auto", cpu) is None
    pretend_cpu(monkeypatch, amx=False, avx512_bf16=True, bf16_speedup=0.71)
    assert "ran 0.71x as fast as float32" in slow_bf16_note("bfloat16", cpu)
    for amx, avx512_bf16 in ((True, False), (False, True)):
        pretend_cpu(monkeypatch, amx, avx512_bf16)
        assert slow_bf16_note("bfloat16", cpu) is None


def test_the_bf16_probe_times_real_matmuls_once_per_process():
    devices.bf16_speedup.cache_clear()
    speedup = devices.bf16_speedup()
    assert math.isfinite(speedup) and speedup > 0
    assert devices.bf16_speedup() == speedup  # cached: a second call does not time again
    assert devices.bf16_speedup.cache_info().hits == 1


@pytest.mark.parametrize(("bf16_cpu", "want"), [(True, "bfloat16"), (False, "float32")])
def test_a_trainer_keeps_what_auto_meant_on_its_device(monkeypatch, tmp_path, bf16_cpu, want):
    pretend_cpu(monkeypatch, bf16_cpu, False)
    np.save(tmp_path / "acts.npy", np.ones((64, 8), dtype=np.float32))
    trainer = Trainer(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2), TrainConfig(tokens=64, batch_size=32),
                      open_activations(tmp_path / "acts.npy"), tmp_path / "out")
    assert TrainConfig.dtype == "auto"
    assert trainer.cfg.dtype == want  # what checkpoints and the run's identity record
    assert trainer.autocast._enabled is (want == "bfloat16")


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
