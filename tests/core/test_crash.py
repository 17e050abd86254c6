"""kill -9 of `harvest` and `train` at seeded random moments, then `--resume`: every file on disk is whole
after each kill, and the finished directory equals an uninterrupted run's (bytes for a harvest; the SAE's
tensors bit for bit on CPU float32 for training).
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

import sae_core.cli
from sae_core.harvest import load_shard, read_manifest
from sae_core.saes import load_sae
from sae_core.saes.artifact import CFG_FILE, CHECKPOINT_FILE, LOG_FILE, METRICS_FILE, WEIGHTS_FILE
from tests.conftest import invoke_cli
from tests.crash import CORE, kill_during, kill_points, one_thread, run_command
from tests.files import file_bytes, temporaries


def harvest_args(model_dir, corpus, out) -> list[object]:
    return ["harvest", "--out", out, "--model", model_dir, "--dataset", corpus, "--site", "layers.1.resid_post",
            "--tokens", 4000, "--context", 32, "--batch-size", 4, "--shard-tokens", 300, "--dtype", "float32",
            "--device", "cpu"]


def run_in_process(*args: object) -> float:
    """Seconds an uninterrupted run of the command took through the CLI's own code, on one thread as killed ones run.

    A kill's delay past its progress point is drawn within a quarter of it: the time scales with the machine.
    """
    start = time.monotonic()
    with one_thread():
        code, out = invoke_cli(sae_core.cli.app, *args)
    assert code == 0, out
    return time.monotonic() - start


def assert_harvest_whole(directory) -> None:
    """The manifest, if written, reads, and every shard it lists loads with the shape it lists."""
    if not (directory / "manifest.json").exists():
        return
    manifest = read_manifest(directory)
    for entry in manifest["shards"]:
        load_shard(directory, entry, manifest["d_model"])
    assert manifest["n_tokens"] == sum(e["rows"] for e in manifest["shards"])


@pytest.fixture(scope="module")
def harvested(tmp_path_factory, tiny_model_dir, corpus):
    """An uninterrupted harvest, and the seconds it took."""
    out = tmp_path_factory.mktemp("crash") / "whole"
    return out, run_in_process(*harvest_args(tiny_model_dir, corpus, out))


def test_killed_harvests_resume_to_the_uninterrupted_files(tmp_path, tiny_model_dir, corpus, harvested):
    whole, seconds = harvested
    out = tmp_path / "cut"
    args = harvest_args(tiny_model_dir, corpus, out)
    outcomes = []
    for point in kill_points(max_delay=seconds / 4):
        outcomes.append(kill_during(*CORE, *args, *(["--resume"] if out.exists() else []), at=point))
        assert_harvest_whole(out)
    assert any(o.killed for o in outcomes), outcomes[-1].output[-2000:]
    run_command(*CORE, *args, "--resume")
    assert file_bytes(out) == file_bytes(whole) and not temporaries(out)


def train_args(activations, out) -> list[object]:
    return ["train", "--activations", activations, "--out", out, "--arch", "topk", "--features", 64, "--k", 4,
            "--tokens", 16_000, "--batch-size", 64, "--dtype", "float32", "--device", "cpu", "--seed", 1,
            "--checkpoint-every-tokens", 1_600]  # a tenth, kept exactly (the default waits on save times)


def assert_sae_dir_whole(directory) -> None:
    """Each of the SAE directory's files is absent or whole: the SAE loads, JSON parses, the checkpoint loads."""
    if (directory / CFG_FILE).exists() and (directory / WEIGHTS_FILE).exists():
        load_sae(directory)
    elif (directory / WEIGHTS_FILE).exists():
        load_file(directory / WEIGHTS_FILE)
    for name in (CFG_FILE, METRICS_FILE):
        if (directory / name).exists():
            json.loads((directory / name).read_text())
    if (directory / CHECKPOINT_FILE).exists():
        torch.load(directory / CHECKPOINT_FILE, weights_only=True)


def log_steps(directory) -> list[dict]:
    """The training log's lines without their speed (which differs between runs)."""
    lines = (directory / LOG_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, harvested):
    """An SAE trained without interruption, and the seconds it took."""
    out = tmp_path_factory.mktemp("crash") / "sae"
    return out, run_in_process(*train_args(harvested[0], out))


def test_killed_training_resumes_to_the_uninterrupted_sae(tmp_path, harvested, trained):
    whole, seconds = trained
    out = tmp_path / "cut"
    args = train_args(harvested[0], out)
    outcomes = []
    for point in kill_points(max_delay=seconds / 4):  # past the bar's end too: the last checkpoint, the SAE, metrics
        outcomes.append(kill_during(*CORE, *args, "--resume", at=point))
        assert_sae_dir_whole(out)
    assert any(o.killed for o in outcomes), outcomes[-1].output[-2000:]
    run_command(*CORE, *args, "--resume")
    expected, resumed = load_file(whole / WEIGHTS_FILE), load_file(out / WEIGHTS_FILE)
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    for name in (CFG_FILE, METRICS_FILE):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert log_steps(out) == log_steps(whole)
    assert not temporaries(out)
