"""Training: recovery of planted sparse features, exact resume, determinism, schedule and bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core.activations import open_activations
from sae_core.config import TrainConfig
from sae_core.evaluate import reconstruction_metrics
from sae_core.saes import ARCHITECTURES, SAEConfig, load_sae, takes_k
from sae_core.train import Trainer, default_lr, geometric_median, lr_factor, train

D, TRUE_FEATURES, D_SAE = 16, 48, 64
ARCHS = sorted(ARCHITECTURES)
# Sparsity settings that suit this toy data (which is far smaller than real activations).
ARCH_SETTINGS = {"relu": {"l1_coefficient": 0.3}, "jumprelu": {"l0_coefficient": 0.05}}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sparse_data(tmp_path_factory):
    """Rows that are sums of ~3 of 48 random unit directions, plus an offset: an SAE should recover them."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(TRUE_FEATURES, D, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = torch.rand(12000, TRUE_FEATURES, generator=g) < 3 / TRUE_FEATURES
    x = (active * (0.5 + 1.5 * torch.rand(12000, TRUE_FEATURES, generator=g))) @ dirs + 2.0
    path = tmp_path_factory.mktemp("data") / "acts.npy"
    np.save(path, x.numpy())
    return path, x


def sae_cfg(arch, **kw):
    return SAEConfig(architecture=arch, d_in=D, d_sae=D_SAE, k=4 if takes_k(arch) else None,
                     **{**ARCH_SETTINGS.get(arch, {}), **kw})


def train_cfg(**kw):
    return TrainConfig(**{"tokens": 256 * 300, "batch_size": 256, "lr": 3e-3, "progress": False, "log_every": 20, **kw})


@pytest.mark.parametrize("arch", ARCHS)
def test_training_recovers_planted_features(arch, sparse_data, tmp_path):
    path, x = sparse_data
    sae = train(sae_cfg(arch), train_cfg(), open_activations(path), tmp_path)
    held_out = x[-2000:]
    with torch.no_grad():
        assert reconstruction_metrics(sae, [held_out])["fvu"] < 0.2
        assert (sae.encode(held_out) > 0).sum(1).float().mean() < 12
    loaded = load_sae(tmp_path)
    assert torch.allclose(loaded(held_out), sae(held_out), atol=1e-5)
    log = [json.loads(line) for line in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(20, 301, 20))
    assert {"step", "tokens", "mse", "loss", "l0", "fvu", "dead_fraction"} <= set(log[-1])
    assert log[-1]["fvu"] < log[0]["fvu"]


def test_unit_norm_decoder_kept(sparse_data, tmp_path):
    path, _ = sparse_data
    trainer = Trainer(sae_cfg("topk"), train_cfg(tokens=256 * 20), open_activations(path), tmp_path)
    trainer.run()
    assert torch.allclose(trainer.sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)


def weights(directory):
    return load_file(directory / "sae_weights.safetensors")


def log_without_timing(directory):
    lines = [json.loads(line) for line in (directory / "training_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in lines]


class Killed(Exception):
    pass


@pytest.mark.parametrize("arch,dtype", [("topk", "bfloat16"), ("batchtopk", "float32"), ("jumprelu", "bfloat16"),
                                        ("relu", "float32")])
def test_resume_ends_exactly_like_an_uninterrupted_run(arch, dtype, sparse_data, tmp_path):
    path, _ = sparse_data
    cfg = train_cfg(tokens=256 * 40, checkpoint_every_steps=10, dtype=dtype, dead_after_tokens=256 * 3)
    train(sae_cfg(arch), cfg, open_activations(path), tmp_path / "whole")

    def kill_at_23(step):
        if step == 23:
            raise Killed

    with pytest.raises(Killed):
        Trainer(sae_cfg(arch), cfg, open_activations(path), tmp_path / "split").run(on_step=kill_at_23)
    assert not (tmp_path / "split" / "sae_weights.safetensors").exists()
    Trainer(sae_cfg(arch), cfg, open_activations(path), tmp_path / "split").run(resume=True)
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert all(torch.equal(whole[name], split[name]) for name in whole)
    assert log_without_timing(tmp_path / "whole") == log_without_timing(tmp_path / "split")


def test_resume_refuses_other_settings(sparse_data, tmp_path):
    path, _ = sparse_data
    cfg = train_cfg(tokens=256 * 4)
    train(sae_cfg("topk"), cfg, open_activations(path), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        Trainer(sae_cfg("topk"), train_cfg(tokens=256 * 8), open_activations(path), tmp_path).run(resume=True)


def test_same_seed_same_result_other_seed_differs(sparse_data, tmp_path):
    path, _ = sparse_data
    cfg = train_cfg(tokens=256 * 15)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(sae_cfg("topk"), TrainConfig(**{**cfg.__dict__, "seed": seed}), open_activations(path), tmp_path / name)
    a, b, c = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["W_enc"], c["W_enc"])


def test_bf16_fast_path_tracks_float32_reference(sparse_data, tmp_path):
    """bf16 autocast with sparse kernels learns as well as the exact float32 dense path."""
    path, x = sparse_data
    results = {}
    arms = {"ref": {"dtype": "float32", "sparse_kernels": False}, "fast": {"dtype": "bfloat16", "sparse_kernels": True}}
    for name, kw in arms.items():
        sae = train(sae_cfg("topk"), train_cfg(**kw), open_activations(path), tmp_path / name)
        with torch.no_grad():
            results[name] = reconstruction_metrics(sae, [x[-2000:]])["fvu"]
    assert results["fast"] < results["ref"] + 0.03


def test_width_mismatch_rejected(sparse_data, tmp_path):
    path, _ = sparse_data
    with pytest.raises(ValueError, match="width 16"):
        Trainer(SAEConfig(architecture="topk", d_in=8, d_sae=32, k=2), train_cfg(), open_activations(path), tmp_path)


def test_schedule_and_defaults():
    assert default_lr(8192) == pytest.approx(2e-3) and default_lr(4 * 8192) == pytest.approx(1e-3)
    factors = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[50] == 1.0
    assert factors[80] == 1.0 and factors[99] == pytest.approx(0.05) and factors[90] < factors[85]


def test_geometric_median_resists_outliers():
    x = torch.cat([torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) * 0.1, torch.full((20, 3), 100.0)])
    assert geometric_median(x).abs().max() < 0.5 < x.mean(0).abs().max()
