"""Training: recovery of planted sparse features, exact resume from any kill point, checkpoint cadence, NaN guard."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core.activations import ActivationSource, open_activations
from sae_core.config import TrainConfig
from sae_core.evaluate import reconstruction_metrics
from sae_core.finite import NonFiniteError
from sae_core.saes import ARCHITECTURES, SAEConfig, load_sae, takes_k, transcodes
from sae_core.train import Trainer, default_lr, geometric_median, lr_factor, train
from tests.crash import one_thread

D, TRUE_FEATURES, D_SAE = 16, 48, 64
ARCHS = sorted(a for a in ARCHITECTURES if not transcodes(a))  # transcoders: test_transcoders.py
# Sparsity settings that suit this toy data (which is far smaller than real activations).
ARCH_SETTINGS = {"relu": {"l1_coefficient": 0.3}, "jumprelu": {"l0_coefficient": 0.05}}


@pytest.fixture(autouse=True)
def on_one_thread():
    with one_thread():
        yield


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
    log = [r for r in read_log(tmp_path) if "checkpoint" not in r]
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


def read_log(directory):
    return [json.loads(line) for line in (directory / "training_log.jsonl").read_text().splitlines()]


def log_without_timing(directory):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_log(directory)]


def checkpoint_steps(directory):
    return [r["step"] for r in read_log(directory) if "checkpoint" in r]


class Killed(Exception):
    pass


def kill_at(kill_step):
    def on_step(step):
        if step == kill_step:
            raise Killed
    return on_step


def assert_same_run(whole, split):
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert log_without_timing(whole) == log_without_timing(split)


@pytest.mark.parametrize("arch,dtype", [("topk", "bfloat16"), ("batchtopk", "float32"), ("jumprelu", "bfloat16"),
                                        ("relu", "float32")])
def test_resume_ends_exactly_like_an_uninterrupted_run(arch, dtype, sparse_data, tmp_path):
    path, _ = sparse_data
    cfg = train_cfg(tokens=256 * 40, checkpoint_every_tokens=256 * 10, dtype=dtype, dead_after_tokens=256 * 3)
    train(sae_cfg(arch), cfg, open_activations(path), tmp_path / "whole")
    with pytest.raises(Killed):
        Trainer(sae_cfg(arch), cfg, open_activations(path), tmp_path / "split").run(on_step=kill_at(23))
    assert not (tmp_path / "split" / "sae_weights.safetensors").exists()
    Trainer(sae_cfg(arch), cfg, open_activations(path), tmp_path / "split").run(resume=True)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


KILL_CFG = {"tokens": 256 * 40, "checkpoint_every_tokens": 256 * 10, "dead_after_tokens": 256 * 3}


@pytest.fixture(scope="module")
def uninterrupted(sparse_data, tmp_path_factory):
    """One uninterrupted run that every kill point is compared with."""
    out = tmp_path_factory.mktemp("whole")
    train(sae_cfg("topk"), train_cfg(**KILL_CFG), open_activations(sparse_data[0]), out)
    return out


# Before the first checkpoint (resume is a fresh start), right before and right after one, mid-run, after
# the last step (no checkpoint there) but before the SAE is written.
@pytest.mark.parametrize("kill_step,checkpoint", [(1, None), (9, None), (10, 10), (11, 10), (29, 20), (40, 30)])
def test_a_kill_at_any_point_resumes_to_the_same_sae(kill_step, checkpoint, uninterrupted, sparse_data, tmp_path):
    cfg = train_cfg(**KILL_CFG)
    with pytest.raises(Killed):
        Trainer(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path).run(on_step=kill_at(kill_step))
    on_disk = tmp_path / "checkpoint.pt"
    assert (torch.load(on_disk, weights_only=True)["step"] if on_disk.exists() else None) == checkpoint
    assert not (tmp_path / "sae_weights.safetensors").exists()
    Trainer(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path).run(resume=True)
    assert_same_run(uninterrupted, tmp_path)


def test_resume_may_change_the_checkpoint_cadence(uninterrupted, sparse_data, tmp_path):
    """Cadence and progress display decide no weight, so a resumed run may set them afresh."""
    with pytest.raises(Killed):
        Trainer(sae_cfg("topk"), train_cfg(**KILL_CFG), open_activations(sparse_data[0]), tmp_path).run(on_step=kill_at(15))
    later = train_cfg(**{**KILL_CFG, "checkpoint_every_tokens": 256 * 4, "checkpoint_every_s": 30.0})
    Trainer(sae_cfg("topk"), later, open_activations(sparse_data[0]), tmp_path).run(resume=True)
    assert weights(tmp_path).keys() == weights(uninterrupted).keys()
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path).values(), weights(uninterrupted).values()))
    assert checkpoint_steps(tmp_path) == [10, 12, 16, 20, 24, 28, 32, 36]


def test_checkpoints_come_every_tenth_of_the_run_by_default_and_show_in_the_log(sparse_data, tmp_path):
    cfg = train_cfg(tokens=256 * 45)
    assert (cfg.checkpoint_every_s, cfg.checkpoint_every_tokens) == (60.0, None)
    trainer = Trainer(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path)
    trainer.clock = clock = FakeClock(per_step=1.0)
    trainer.run(on_step=clock.on_step)
    assert checkpoint_steps(tmp_path) == [5, 10, 15, 20, 25, 30, 35, 40]  # none at the end: the SAE is saved
    assert not (tmp_path / "checkpoint.pt").exists()
    line = next(r for r in read_log(tmp_path) if "checkpoint" in r)
    assert line == {"step": 5, "tokens": 256 * 5, "checkpoint": "checkpoint.pt"}


def test_keep_checkpoint_writes_the_last_step_and_keeps_it(sparse_data, tmp_path):
    cfg = train_cfg(tokens=256 * 12, checkpoint_every_tokens=256 * 5, keep_checkpoint=True)
    train(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path)
    assert checkpoint_steps(tmp_path) == [5, 10, 12]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 12


class FakeClock:
    """Wall time that moves only when told: a step takes `per_step` seconds, a save `per_save`."""

    def __init__(self, per_step, per_save=0.0):
        self.now, self.per_step, self.per_save, self.saves = 0.0, per_step, per_save, []

    def __call__(self):
        return self.now

    def on_step(self, step):
        self.now += self.per_step

    def timed(self, save):
        def slow_save(log=None):
            self.saves.append(self.now)
            save(log)
            self.now += self.per_save
        return slow_save


@pytest.mark.parametrize("per_save,gap", [(0.0, 60), (5.0, 100)])
def test_time_cadence_is_a_minute_stretched_by_slow_saves(per_save, gap, sparse_data, tmp_path):
    """Every 60 s of wall time; when a save takes 5 s, every 20 saves' time (100 s), so saving costs <= 5%."""
    cfg = train_cfg(tokens=256 * 60, checkpoint_every_tokens=0)
    trainer = Trainer(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path)
    trainer.clock = clock = FakeClock(per_step=10.0, per_save=per_save)
    trainer.save_checkpoint = clock.timed(trainer.save_checkpoint)
    trainer.run(on_step=clock.on_step)
    during = clock.saves
    assert len(during) >= 3
    assert all(b - a - per_save == gap for a, b in itertools.pairwise(during))


@pytest.mark.parametrize("every_tokens,steps", [(None, [5, 15, 25, 35]), (256 * 5, [5, 10, 15, 20, 25, 30, 35, 40])])
def test_default_tenths_wait_for_twenty_saves_time_and_asked_ones_do_not(every_tokens, steps, sparse_data, tmp_path):
    """A save as long as the run's tenth would double a short run's time: by default a tenth's checkpoint waits
    until 20 saves' time has passed since the last; a cadence asked for is kept."""
    cfg = train_cfg(tokens=256 * 45, checkpoint_every_tokens=every_tokens)
    trainer = Trainer(sae_cfg("topk"), cfg, open_activations(sparse_data[0]), tmp_path)
    trainer.clock = clock = FakeClock(per_step=1.0, per_save=0.4)
    trainer.save_checkpoint = clock.timed(trainer.save_checkpoint)
    trainer.run(on_step=clock.on_step)
    assert checkpoint_steps(tmp_path) == steps


class PoisonedBatch:
    """Training data whose batch at one step holds a NaN, as a diverging model stream would."""

    def __init__(self, source, step):
        self.source, self.step = source, step
        self.d_in, self.provenance = source.d_in, source.provenance

    def head(self, n_rows):
        return self.source.head(n_rows)

    def rank_batches(self, batch_size, seed, start_row, buffer_rows, dist):
        for step, batch in enumerate(self.source.rank_batches(batch_size, seed, start_row, buffer_rows, dist),
                                     start_row // batch_size + 1):
            if step == self.step:
                batch = batch.clone()
                batch[3, 5] = float("nan")
            yield batch


@pytest.mark.parametrize("log_every", [5, 100])  # found at the logging step 15, or at the checkpoint of step 20
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(log_every, sparse_data, tmp_path):
    cfg = train_cfg(tokens=256 * 40, checkpoint_every_tokens=256 * 10, log_every=log_every)
    data = PoisonedBatch(open_activations(sparse_data[0]), step=12)
    with pytest.raises(NonFiniteError, match=r"at step 12 of 40.*checkpoint.pt \(step 10\) is kept"):
        Trainer(sae_cfg("topk"), cfg, data, tmp_path).run()
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 10 and all(torch.isfinite(t).all() for t in payload["sae"].values())
    assert not (tmp_path / "sae_weights.safetensors").exists()
    assert checkpoint_steps(tmp_path) == [10]
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path) if "loss" in r)


def test_resume_refuses_other_settings(sparse_data, tmp_path):
    path, _ = sparse_data
    cfg = train_cfg(tokens=256 * 4, keep_checkpoint=True)
    train(sae_cfg("topk"), cfg, open_activations(path), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        Trainer(sae_cfg("topk"), train_cfg(tokens=256 * 8), open_activations(path), tmp_path).run(resume=True)


def test_resume_refuses_other_activation_rows(sparse_data, tmp_path):
    """Resume positions address the rows: a source that lost rows (say to --skip-nonfinite) would train on others."""
    path, x = sparse_data
    with pytest.raises(Killed):
        Trainer(sae_cfg("topk"), train_cfg(**KILL_CFG), open_activations(path), tmp_path).run(on_step=kill_at(15))
    fewer = ActivationSource.in_memory(x[:-3])
    with pytest.raises(ValueError, match="over 12000 activation rows, these are 11997"):
        Trainer(sae_cfg("topk"), train_cfg(**KILL_CFG), fewer, tmp_path).run(resume=True)


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
