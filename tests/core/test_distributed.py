"""Two processes over gloo give what one process gives: the trained SAE, resumed runs, global top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core.activations import open_activations
from sae_core.config import TrainConfig
from sae_core.distributed import Dist
from sae_core.saes import SAEConfig
from sae_core.train import Trainer, train
from tests.spawn import run_ranks

D, D_SAE, ROWS = 16, 64, 4096


@pytest.fixture(scope="module")
def acts_path(tmp_path_factory) -> Path:
    """Sparse sums of random directions plus an offset, as in test_train."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(48, D, generator=g), dim=1)
    active = torch.rand(ROWS, 48, generator=g) < 3 / 48
    x = (active * (0.5 + 1.5 * torch.rand(ROWS, 48, generator=g))) @ dirs + 2.0
    path = tmp_path_factory.mktemp("data") / "acts.npy"
    np.save(path, x.numpy())
    return path


def sae_cfg(arch: str) -> SAEConfig:
    return SAEConfig(architecture=arch, d_in=D, d_sae=D_SAE, k=4)


def train_cfg(**kw) -> TrainConfig:
    # float32 and a short dead window: AuxK is active, so its batch-wide normalisation is exercised too.
    return TrainConfig(**{"tokens": 256 * 24, "batch_size": 256, "lr": 3e-3, "progress": False, "log_every": 4,
                          "dtype": "float32", "dead_after_tokens": 256 * 2, "checkpoint_every_steps": 5, **kw})


class Killed(Exception):
    pass


def train_on_ranks(dist: Dist, arch: str, path: Path, out: Path, kill_at: int | None) -> None:
    """Train (killed after step `kill_at` when given, then resumed) on every rank."""
    def kill(step: int) -> None:
        if step == kill_at:
            raise Killed

    if kill_at is not None:
        with pytest.raises(Killed):
            Trainer(sae_cfg(arch), train_cfg(), open_activations(path), out, dist).run(on_step=kill)
    train(sae_cfg(arch), train_cfg(), open_activations(path), out, resume=kill_at is not None, dist=dist)


@pytest.mark.parametrize("arch,kill_at", [("topk", None), ("batchtopk", 13)])
def test_two_processes_train_the_same_sae_as_one(arch, kill_at, acts_path, tmp_path):
    train(sae_cfg(arch), train_cfg(), open_activations(acts_path), tmp_path / "one")
    run_ranks(2, train_on_ranks, arch, acts_path, tmp_path / "two", kill_at)
    one, two = (load_file(tmp_path / d / "sae_weights.safetensors") for d in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=2e-5, rtol=1e-4), name
    assert not torch.allclose(one["W_enc"], sae_cfg_init_W_enc(arch), atol=1e-3)  # training moved the weights
    logs = [(tmp_path / d / "training_log.jsonl").read_text().count("\n") for d in ("one", "two")]
    assert logs[0] == logs[1] == 6


def sae_cfg_init_W_enc(arch: str) -> torch.Tensor:
    from sae_core.saes import build_sae

    return build_sae(sae_cfg(arch)).W_enc.detach()


def test_a_batch_that_does_not_split_evenly_is_refused(acts_path, tmp_path):
    with pytest.raises(ValueError, match="split evenly"):
        Trainer(sae_cfg("topk"), train_cfg(batch_size=255), open_activations(acts_path), tmp_path, Dist(0, 2))
