"""Two processes over gloo give what one process gives: trained SAEs (data parallel, resumed, feature
sharded), harvests and recorded top examples.

Starting processes is the slow part on a CPU, so one spawn of two ranks runs every distributed job
(`two_ranks`) and the tests compare its outputs with one-process references.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core import devices
from sae_core.activations import open_activations
from sae_core.cli import app
from sae_core.config import HarvestConfig, TrainConfig
from sae_core.distributed import Dist
from sae_core.harvest import harvest, load_shard, read_manifest
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model
from sae_core.records import RecordConfig, SAERecord, record_sae
from sae_core.saes import Runtime, SAEConfig, build_sae, load_sae
from sae_core.saes.sharded import ShardedTopKSAE
from sae_core.sites import parse_site
from sae_core.streaming import stream_from_corpus
from sae_core.train import Trainer, sae_config_for, train
from tests.conftest import run_cli
from tests.core.tiny_sae import TinySAE
from tests.factories import tiny_model, tiny_tokenizer
from tests.files import file_bytes
from tests.spawn import free_port, run_ranks

D, D_SAE, ROWS = 16, 64, 4096
SITE = parse_site("layers.1.resid_post")
TRAIN_RUNS = {"topk": ("topk", None, False, "float32"), "batchtopk-resumed": ("batchtopk", 13, False, "float32"),
              "sharded-resumed": ("topk", 13, True, "float32"), "batchtopk-bf16": ("batchtopk", None, False, "bfloat16")}
"""name -> (architecture, step the first attempt is killed after, feature sharding, compute dtype)."""
TOLERANCE = {"float32": {"atol": 2e-5, "rtol": 1e-4}, "bfloat16": {"atol": 2e-2, "rtol": 2e-2}}
"""bf16 matmuls round differently on a half batch than on a whole one; float32 is the exact comparison."""


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


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, acts_path, tiny_model_dir, corpus) -> Path:
    """The output directory of every job, run once on two ranks."""
    out = tmp_path_factory.mktemp("two-ranks")
    run_ranks(2, all_jobs, acts_path, tiny_model_dir, corpus, out)
    return out


def all_jobs(dist: Dist, acts: Path, model_dir: Path, corpus: str, out: Path) -> None:
    """Every rank's part of every job (assertions inside fail the spawn, and so the test)."""
    for name, (arch, kill_at, sharded, dtype) in TRAIN_RUNS.items():
        train_run(dist, arch, acts, out / name, kill_at, sharded, dtype)
    harvest_runs(dist, model_dir, corpus, out)
    stream_run(dist, model_dir, corpus, out / "streamed")
    auto_dtype_run(dist, acts, out)
    record = one_record(dist)
    if dist.is_main:
        torch.save(record, out / "record.pt")
    sharded_matches_unsharded(dist)


# --- training ---------------------------------------------------------------------------------------


def sae_cfg(arch: str) -> SAEConfig:
    return SAEConfig(architecture=arch, d_in=D, d_sae=D_SAE, k=4)


def train_cfg(**kw) -> TrainConfig:
    # float32 and a short dead window: AuxK is active, so its batch-wide normalisation is exercised too.
    return TrainConfig(**{"tokens": 256 * 24, "batch_size": 256, "lr": 3e-3, "progress": False, "log_every": 4,
                          "dtype": "float32", "dead_after_tokens": 256 * 2, "checkpoint_every_tokens": 256 * 5, **kw})


class Killed(Exception):
    pass


def train_run(dist: Dist, arch: str, path: Path, out: Path, kill_at: int | None, sharded: bool, dtype: str) -> None:
    """Train (killed after step `kill_at` when given, then resumed from the last checkpoint)."""
    def kill(step: int) -> None:
        if step == kill_at:
            raise Killed

    if kill_at is not None:
        with pytest.raises(Killed):
            Trainer(sae_cfg(arch), train_cfg(dtype=dtype), open_activations(path), out, dist, sharded).run(on_step=kill)
        left = out / "left-by-the-kill"  # a finished run deletes its checkpoints: keep what the killed one wrote
        left.mkdir(exist_ok=True)
        for own in (f"checkpoint.rank{dist.rank}.pt", *(["checkpoint.pt"] if dist.is_main else [])):
            if (out / own).exists():
                shutil.copy(out / own, left / own)
    sae = train(sae_cfg(arch), train_cfg(dtype=dtype), open_activations(path), out, resume=kill_at is not None,
                dist=dist, shard_features=sharded)
    for tensor in sae.state_dict().values():  # every rank ends with the same SAE, bit for bit
        both = dist.gather_cat(tensor[None])
        assert torch.equal(both[0], both[1])


@pytest.mark.parametrize("name", TRAIN_RUNS)
def test_two_processes_train_the_same_sae_as_one(name, two_ranks, acts_path, tmp_path):
    arch, dtype = TRAIN_RUNS[name][0], TRAIN_RUNS[name][3]
    train(sae_cfg(arch), train_cfg(dtype=dtype), open_activations(acts_path), tmp_path)
    one, two = (load_file(d / "sae_weights.safetensors") for d in (tmp_path, two_ranks / name))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], **TOLERANCE[dtype]), (key, (one[key] - two[key]).abs().max())
    assert not torch.allclose(one["W_enc"], build_sae(sae_cfg(arch)).W_enc.detach(), atol=1e-3)  # it trained
    logs = [[json.loads(line) for line in (d / "training_log.jsonl").read_text().splitlines()]
            for d in (tmp_path, two_ranks / name)]
    assert [r["step"] for r in logs[0] if "checkpoint" in r] == [r["step"] for r in logs[1] if "checkpoint" in r]
    logs = [[r for r in log if "checkpoint" not in r] for log in logs]
    assert len(logs[0]) == len(logs[1]) == 6
    for a, b in zip(*logs):
        assert a["step"] == b["step"] and a["l0"] == pytest.approx(b["l0"], rel=1e-4)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3 if dtype == "float32" else 3e-2)
        assert a["dead_fraction"] == pytest.approx(b["dead_fraction"], abs=0 if dtype == "float32" else 0.05)


def stream_run(dist: Dist, model_dir: Path, corpus: str, out: Path) -> None:
    """Data-parallel training straight from the model, each rank streaming its own contexts."""
    stream, _ = stream_from_corpus(load_model(str(model_dir)), SITE, corpus, context_len=32)
    train(sae_config_for(stream, "topk", 64, k=4), train_cfg(tokens=256 * 8), stream, out, dist=dist)


def auto_dtype_run(dist: Dist, acts: Path, out: Path) -> None:
    """A trainer's `auto` dtype on ranks whose CPUs time bf16 against float32 differently (AVX512-BF16, no AMX)."""
    with (mock.patch.object(torch.cpu, "_is_amx_tile_supported", lambda: False),
          mock.patch.object(torch.cpu, "_is_avx512_bf16_supported", lambda: True),
          mock.patch.object(devices, "bf16_speedup", lambda: 0.7 if dist.is_main else 2.0)):
        trainer = Trainer(sae_cfg("topk"), train_cfg(dtype="auto"), open_activations(acts), out / "auto", dist)
    (out / f"auto-dtype.rank{dist.rank}").write_text(trainer.cfg.dtype)


def test_every_rank_computes_in_the_dtype_auto_meant_on_rank_0(two_ranks):
    assert [(two_ranks / f"auto-dtype.rank{rank}").read_text() for rank in (0, 1)] == ["float32", "float32"]


def test_two_ranks_train_from_a_streamed_model(two_ranks):
    sae = load_sae(two_ranks / "streamed")
    assert sae.cfg.provenance.site.name == "layers.1.resid_post" and sae.cfg.d_in == 32
    log = [json.loads(line) for line in (two_ranks / "streamed" / "training_log.jsonl").read_text().splitlines()]
    figures = [r for r in log if "checkpoint" not in r]
    assert [r["step"] for r in figures] == [4, 8] and figures[-1]["l0"] == pytest.approx(4.0)


def test_feature_shards_checkpoint_separately(two_ranks):
    left = two_ranks / "sharded-resumed" / "left-by-the-kill"
    files = sorted(p.name for p in left.glob("checkpoint*"))
    assert files == ["checkpoint.rank0.pt", "checkpoint.rank1.pt"]
    for name in files:  # each shard's checkpoint records the whole SAE's config, not its shard's width
        assert torch.load(left / name, weights_only=True)["sae_cfg"]["d_sae"] == D_SAE
    assert not (two_ranks / "topk" / "checkpoint.rank0.pt").exists()


def test_a_batch_that_does_not_split_evenly_is_refused(acts_path, tmp_path):
    with pytest.raises(ValueError, match="split evenly"):
        Trainer(sae_cfg("topk"), train_cfg(batch_size=255), open_activations(acts_path), tmp_path, Dist(0, 2))


def sharded_matches_unsharded(dist: Dist) -> None:
    """On every rank: the shard's encoding, losses and gradients are the unsharded SAE's, sliced."""
    cfg = SAEConfig(architecture="topk", d_in=D, d_sae=D_SAE, k=4, aux_k=6)
    full, shard = build_sae(cfg, seed=5), ShardedTopKSAE(cfg, Runtime(shards=dist), seed=5)
    assert shard.cfg == full.cfg and shard.d_local == D_SAE // 2  # the shard's config is the whole SAE's
    part = slice(dist.rank * D_SAE // 2, (dist.rank + 1) * D_SAE // 2)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(2)) + 1.0
    with torch.no_grad():
        assert torch.equal(shard.encode(x), full.encode(x)[:, part])
        torch.testing.assert_close(shard(x), full(x))
    dead_F = torch.arange(D_SAE) % 3 == 0  # AuxK over dead features on both shards
    for sparse_kernels in (False, True):
        full = build_sae(cfg, seed=5, runtime=Runtime(sparse_kernels))
        shard = ShardedTopKSAE(cfg, Runtime(sparse_kernels, shards=dist), seed=5)
        outs = [sae.training_forward(x, dead_F=d) for sae, d in ((full, dead_F), (shard, dead_F[part]))]
        for sae, out in zip((full, shard), outs):
            sae.zero_grad()
            out.loss.backward()
        assert outs[0].losses.keys() == outs[1].losses.keys() == {"mse", "aux_k"}
        for name in outs[0].losses:
            torch.testing.assert_close(outs[1].losses[name], outs[0].losses[name])
        assert outs[1].l0 == outs[0].l0 and torch.equal(outs[1].fired_F, outs[0].fired_F[part])
        torch.testing.assert_close(shard.W_enc.grad, full.W_enc.grad[:, part])
        torch.testing.assert_close(shard.W_dec.grad, full.W_dec.grad[part])
        torch.testing.assert_close(shard.b_enc.grad, full.b_enc.grad[part])
        torch.testing.assert_close(shard.b_dec.grad, full.b_dec.grad)
    gathered = shard.unsharded()
    assert all(torch.equal(a, b) for a, b in zip(gathered.state_dict().values(), full.state_dict().values()))


def test_sharded_topk_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="split evenly"):
        ShardedTopKSAE(SAEConfig(architecture="topk", d_in=D, d_sae=63, k=4), Runtime(shards=Dist(0, 2)))
    with pytest.raises(ValueError, match="supports topk"):
        ShardedTopKSAE(sae_cfg("batchtopk"), Runtime(shards=Dist(0, 2)))


# --- harvest ----------------------------------------------------------------------------------------


def harvest_cfg(model_dir: Path, corpus: str, tokens: int) -> HarvestConfig:
    return HarvestConfig(model=str(model_dir), site="layers.1.resid_post", dataset=corpus, tokens=tokens,
                         context_len=32, batch_size=3, shard_tokens=150, dtype="float32")


def harvest_runs(dist: Dist, model_dir: Path, corpus: str, out: Path) -> None:
    """A direct 600-row harvest, one grown from 300 rows by a resumed run (which reads the rank manifests), and
    one at two sites."""
    harvest(harvest_cfg(model_dir, corpus, 600), out / "direct", progress=False, dist=dist)
    harvest(replace(harvest_cfg(model_dir, corpus, 600), site="layers.0.mlp_out,layers.1.resid_post"), out / "sites",
            progress=False, dist=dist)
    harvest(harvest_cfg(model_dir, corpus, 300), out / "grown", progress=False, dist=dist)
    harvest(harvest_cfg(model_dir, corpus, 600), out / "grown", resume=True, progress=False, dist=dist)


def rows_by_address(directory: Path) -> dict[tuple[int, int], torch.Tensor]:
    """(global context, position) -> activation row, checking each shard's contexts follow its stride."""
    manifest, found = read_manifest(directory), {}
    for entry in manifest["shards"]:
        shard = load_shard(directory, entry, manifest["d_model"])
        for (ctx, pos), row in zip(shard["positions"].tolist(), shard["activations"]):
            assert (ctx - entry["first_context"]) % entry["context_stride"] == 0
            found[(ctx, pos)] = row
    return found


def test_two_ranks_harvest_disjoint_contexts_into_one_manifest(two_ranks, tiny_model_dir, corpus, tmp_path):
    harvest(harvest_cfg(tiny_model_dir, corpus, 1400), tmp_path / "one", progress=False)
    one = rows_by_address(tmp_path / "one")
    for name in ("direct", "grown"):
        manifest = read_manifest(two_ranks / name)
        assert manifest["complete"] and manifest["n_tokens"] == 600 and manifest["world"] == 2
        files = [e["file"] for e in manifest["shards"]]
        assert len(set(files)) == len(files) and {f[:9] for f in files} == {"shard_r0_", "shard_r1_"}
        two = rows_by_address(two_ranks / name)
        assert len(two) == 600 and {ctx % 2 for ctx, _ in two} == {0, 1}
        for address, row in two.items():
            torch.testing.assert_close(row, one[address])
    assert file_bytes(two_ranks / "grown") == file_bytes(two_ranks / "direct")  # a resume with more rows continues exactly
    assert file_bytes(two_ranks / "sites" / "layers.1.resid_post") == file_bytes(two_ranks / "direct")
    assert read_manifest(two_ranks / "sites" / "layers.0.mlp_out")["n_tokens"] == 600
    assert open_activations(two_ranks / "direct").n_rows == 600


def test_a_two_rank_harvest_is_not_resumed_by_one_process(two_ranks, tiny_model_dir, corpus):
    with pytest.raises(ValueError, match="world: 2 != 1"):
        harvest(harvest_cfg(tiny_model_dir, corpus, 900), two_ranks / "direct", resume=True, progress=False)


# --- recording --------------------------------------------------------------------------------------

RECORD_CFG = RecordConfig(n_top=5, before=6, after=3, n_intervals=4, per_interval=3, batch_size=4)


def record_contexts() -> torch.Tensor:
    """Random contexts, some sharing their first tokens: equal activations, so ties must break the same way."""
    ids = torch.randint(3, 512, (31, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 0
    ids[5:9, 1:4] = ids[20, 1:4]
    return ids


def one_record(dist: Dist) -> SAERecord:
    return record_sae(tiny_model("llama"), TinySAE(), list(record_contexts()), site=SITE, tokenizer=tiny_tokenizer(),
                      cfg=RECORD_CFG, dist=dist)


def test_two_ranks_record_the_same_top_examples_and_statistics_as_one(two_ranks):
    two, one = torch.load(two_ranks / "record.pt", weights_only=False), one_record(Dist())
    assert (two.n_tokens, two.n_contexts) == (one.n_tokens, one.n_contexts)
    for name in ("count_F", "hist_FB"):
        assert torch.equal(getattr(two, name), getattr(one, name)), name
    for name in ("max_F", "mean_F"):
        torch.testing.assert_close(getattr(two, name), getattr(one, name))
    assert torch.equal(two.coactive.index_FK, one.coactive.index_FK)
    assert torch.equal(two.coactive.value_FK, one.coactive.value_FK)
    top_two, top_one = (r.examples.interval_E < 0 for r in (two, one))
    assert top_one.sum() > 0
    for name in ("feature_E", "rank_E", "context_E", "start_E", "peak_E", "value_E", "tokens_EW", "acts_EW"):
        assert torch.equal(getattr(two.examples, name)[top_two], getattr(one.examples, name)[top_one]), name


def test_merged_quantile_samples_are_real_activations_in_their_intervals(two_ranks):
    record = torch.load(two_ranks / "record.pt", weights_only=False)
    f_CTF = TinySAE().encode(truncated_forward(tiny_model("llama"), SITE, record_contexts()))
    n = RECORD_CFG.n_intervals
    for j in range(f_CTF.shape[-1]):
        feat = record.feature(j)
        per_interval = torch.bincount(torch.tensor([e.interval for e in feat.quantiles], dtype=torch.long), minlength=n)
        assert per_interval.max() <= RECORD_CFG.per_interval
        assert (len(feat.quantiles) > 0) == (feat.max_act > 0)
        for e in feat.quantiles:
            assert e.value == f_CTF[e.context, e.start + e.peak, j]
            assert e.interval / n * feat.max_act <= e.value <= (e.interval + 1) / n * feat.max_act


# --- the command line under torchrun ----------------------------------------------------------------


def test_torchrun_trains_the_same_sae_as_one_process(acts_path, tmp_path):
    args = ["train", "--activations", str(acts_path), "--arch", "topk", "--features", "64", "--k", "4",
            "--tokens", "4096", "--batch-size", "256", "--dtype", "float32", "--device", "cpu"]
    result = run_cli(app, *args, "--out", tmp_path / "one")
    assert result.exit_code == 0, result.output
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(free_port()), "-m", "sae_core", *args, "--distributed", "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads(launched.stdout)["eval_rows"] == "held-out tail"  # rank 0 alone prints the metrics
    one, two = (load_file(tmp_path / d / "sae_weights.safetensors") for d in ("one", "two"))
    for name in one:
        assert torch.allclose(one[name], two[name], atol=2e-5, rtol=1e-4), name


def test_distributed_flag_without_torchrun_is_a_clear_error(acts_path, tmp_path):
    result = run_cli(app, "train", "--activations", acts_path, "--distributed", "--out", tmp_path)
    assert result.exit_code == 2 and "torchrun" in result.output
