"""The library's CLI: its commands alone, and harvest -> train -> eval end to end on a tiny model, and bad inputs."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from sae_core.cli import app
from sae_core.saes import load_sae
from tests.conftest import invoke_cli, listed_commands, pretend_cpu, run_cli

invoke = partial(invoke_cli, app)
LIBRARY_COMMANDS = ["sites", "harvest", "train", "eval", "contrast", "convert", "attribute"]


def test_the_library_cli_lists_its_own_commands_alone():
    assert listed_commands(app) == LIBRARY_COMMANDS


@pytest.fixture(scope="module")
def harvested(tmp_path_factory, tiny_model_dir, corpus):
    """A real harvest of the tiny Llama at layer 1 over a small text corpus."""
    root = tmp_path_factory.mktemp("cli")
    code, out = invoke("harvest", "--model", tiny_model_dir, "--site", "layers.1.resid_post", "--dataset", corpus,
                       "--tokens", 3000, "--context", 32, "--out", root / "acts", "--dtype", "float32")
    assert code == 0, out
    return root / "acts", corpus


def test_train_writes_the_saelens_layout_with_log_and_heldout_metrics(harvested, tmp_path):
    acts, _ = harvested
    code, out = invoke("train", "--activations", acts, "--arch", "topk", "--features", 64, "--k", 4,
                       "--tokens", 8192, "--batch-size", 256, "--out", tmp_path / "sae")
    assert code == 0, out
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert metrics["eval_rows"] == "held-out tail" and metrics["rows"] == 300
    assert 0 <= metrics["fvu"] < 1 and metrics["l0"] == pytest.approx(4, abs=0.01)
    log = [json.loads(line) for line in (tmp_path / "sae" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 32 and log[-1]["tokens"] == 8192
    sae = load_sae(tmp_path / "sae")
    assert (sae.cfg.architecture, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == ("topk", 32, 64, 4)
    provenance = sae.cfg.provenance
    assert provenance.site.name == "layers.1.resid_post" and provenance.hook_name == "blocks.1.hook_resid_post"


def test_eval_prints_reconstruction_and_ce_metrics(harvested, tmp_path, tiny_model_dir):
    acts, corpus = harvested
    assert invoke("train", "--activations", acts, "--features", 64, "--k", 8, "--tokens", 4096,
                  "--batch-size", 256, "--out", tmp_path / "sae")[0] == 0
    result = run_cli(app, "eval", "--sae", tmp_path / "sae", "--activations", acts, "--model", tiny_model_dir,
                     "--dataset", corpus, "--contexts", 4, "--context", 32, "--save")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["rows"] == 3000 and 0 < metrics["ce_tokens"] <= 4 * 30  # BOS and EOS positions are left out
    assert metrics["ce_loss_recovered"] == pytest.approx(
        (metrics["ce_zero"] - metrics["ce_sae"]) / (metrics["ce_zero"] - metrics["ce_clean"]))
    assert set(metrics) >= {"mse", "fvu", "explained_variance", "l0", "dead_fraction", "dense_fraction",
                            "ce_clean", "ce_sae", "ce_zero", "ce_loss_recovered"}
    saved = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert saved["ce_loss_recovered"] == metrics["ce_loss_recovered"] and saved["eval_rows"] == "held-out tail"


def test_train_from_npy_without_holdout(tmp_path):
    rows = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    np.save(tmp_path / "acts.npy", rows)
    code, out = invoke("train", "--activations", tmp_path / "acts.npy", "--arch", "relu", "--features", 16,
                       "--tokens", 1200, "--batch-size", 100, "--holdout", 0, "--out", tmp_path / "sae")
    assert code == 0, out
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert metrics["eval_rows"] == "training rows" and metrics["rows"] == 600


def test_an_sae_from_a_bare_array_names_a_hook_saelens_can_read(tmp_path):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32))
    common = ["--activations", tmp_path / "acts.npy", "--features", 16, "--k", 4, "--tokens", 400]
    code, out = invoke("train", *common, "--out", tmp_path / "bare")
    assert code == 0, out
    cfg = json.loads((tmp_path / "bare" / "cfg.json").read_text())
    assert cfg["hook_name"] == cfg["metadata"]["hook_name"] == "unknown" and cfg["saescope"]["hook_name"] is None
    code, out = invoke("train", *common, "--site", "layers.3.resid_post", "--out", tmp_path / "named")
    assert code == 0, out
    cfg = json.loads((tmp_path / "named" / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.3.hook_resid_post" and cfg["saescope"]["site"] == "layers.3.resid_post"


def test_train_refuses_a_site_other_than_the_harvests(harvested, tmp_path):
    code, out = invoke("train", "--activations", harvested[0], "--site", "layers.0.mlp_out", "--features", 16,
                       "--k", 4, "--tokens", 100, "--out", tmp_path / "sae")
    assert code == 2 and "not layers.0.mlp_out" in out


def test_convert_writes_sparsify_and_refuses_what_it_cannot_write(tmp_path):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32))
    for arch in ("topk", "relu"):
        code, out = invoke("train", "--activations", tmp_path / "acts.npy", "--arch", arch, "--features", 16,
                           "--k", 4, "--tokens", 400, "--out", tmp_path / arch)
        assert code == 0, out
    code, out = invoke("convert", "--sae", tmp_path / "topk", "--to", "sparsify", "--out", tmp_path / "sp")
    assert code == 0 and "in sparsify layout" in out, out
    assert {p.name for p in (tmp_path / "sp").iterdir()} == {"cfg.json", "sae.safetensors"}
    code, out = invoke("convert", "--sae", tmp_path / "relu", "--to", "sparsify", "--out", tmp_path / "sp2")
    assert code == 2 and "sparsify computes TopK SAEs only; this SAE is relu" in out
    code, out = invoke("convert", "--sae", tmp_path / "topk", "--to", "saelens", "--out", tmp_path / "relu")
    assert code == 2 and "already holds an SAE" in out
    code, out = invoke("convert", "--sae", tmp_path / "topk", "--to", "onnx", "--out", tmp_path / "x")
    assert code == 2 and "unknown layout 'onnx'" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--activations", "nowhere.npy", "--out", "x"], "no activations at nowhere.npy"),
        (["train", "--activations", "{npy}", "--arch", "gated", "--features", 16, "--out", "{tmp}/s"],
         "unknown SAE architecture 'gated'"),
        (["train", "--activations", "{npy}", "--features", 16, "--k", 40, "--out", "{tmp}/s"], "k must be in 1..d_sae=16"),
        (["train", "--activations", "{npy}", "--features", 16, "--k", 4, "--dtype", "float16", "--out", "{tmp}/s"],
         "unknown compute dtype 'float16'"),
        (["eval", "--sae", "{tmp}"], "give --activations"),
        (["eval", "--sae", "{tmp}", "--activations", "{npy}"], "no SAE found"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, args, message):
    np.save(tmp_path / "acts.npy", np.ones((50, 8), dtype=np.float32))
    filled = [str(a).format(npy=tmp_path / "acts.npy", tmp=tmp_path) for a in args]
    code, out = invoke(*filled)
    assert code == 2 and message in out and "Traceback" not in out


def nan_rows(path, bad=(7, 300, 301)):
    """600 rows of width 8 with NaN or infinities in rows `bad`."""
    rows = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    for i, row in enumerate(bad):
        rows[row, i % 8] = (np.nan, np.inf, -np.inf)[i % 3]
    np.save(path, rows)
    return path


def test_train_and_eval_refuse_non_finite_rows_naming_file_and_row(tmp_path):
    acts = nan_rows(tmp_path / "acts.npy")
    code, out = invoke("train", "--activations", acts, "--features", 16, "--k", 4, "--batch-size", 100,
                       "--out", tmp_path / "sae")
    assert code == 2 and f"{acts}: row 7 holds NaN or infinite values" in out and "--skip-nonfinite" in out
    assert "Traceback" not in out and not (tmp_path / "sae" / "sae_weights.safetensors").exists()
    code, out = invoke("train", "--activations", acts, "--features", 16, "--k", 4, "--batch-size", 100,
                       "--skip-nonfinite", "--out", tmp_path / "sae")
    assert code == 0, out
    assert json.loads(out[out.index("{"):])["nonfinite_rows_skipped"] == 3
    assert json.loads((tmp_path / "sae" / "metrics.json").read_text())["nonfinite_rows_skipped"] == 3
    assert all(t.isfinite().all() for t in load_sae(tmp_path / "sae").state_dict().values())
    code, out = invoke("eval", "--sae", tmp_path / "sae", "--activations", acts)
    assert code == 2 and f"{acts}: row 7 holds NaN" in out
    code, out = invoke("eval", "--sae", tmp_path / "sae", "--activations", acts, "--skip-nonfinite")
    metrics = json.loads(out)
    assert code == 0 and metrics["rows"] == 597 and metrics["nonfinite_rows_skipped"] == 3
    assert all(np.isfinite(v) for v in metrics.values())


def test_train_checkpoint_cadence_from_the_command_line(tmp_path):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32))
    code, out = invoke("train", "--activations", tmp_path / "acts.npy", "--features", 16, "--k", 4, "--tokens", 1500,
                       "--batch-size", 100, "--holdout", 0, "--checkpoint-every-tokens", 400, "--out", tmp_path / "sae")
    assert code == 0, out
    log = [json.loads(line) for line in (tmp_path / "sae" / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "checkpoint" in r] == [4, 8, 12]


def test_skip_nonfinite_does_not_apply_to_a_streamed_model(tmp_path):
    code, out = invoke("train", "--model", "tiny", "--tokens", 100, "--skip-nonfinite", "--out", tmp_path / "s")
    assert code == 2 and "--skip-nonfinite applies to --activations" in out


def test_harvest_at_several_sites_then_train_one_sae_per_site_each_as_trained_alone(tmp_path, tiny_model_dir, corpus):
    code, out = invoke("harvest", "--model", tiny_model_dir, "--site", "layers.2.resid_post,layers.0.resid_post",
                       "--dataset", corpus, "--tokens", 1200, "--context", 32, "--out", tmp_path / "acts",
                       "--dtype", "float32")
    assert code == 0, out
    assert f"wrote 1200 activations of {tiny_model_dir.name} at layers.0.resid_post, layers.2.resid_post" in out
    options = ["--arch", "topk", "--features", 32, "--k", 4, "--tokens", 2048, "--batch-size", 128, "--seed", 3]
    code, out = invoke("train", "--activations", tmp_path / "acts", *options, "--out", tmp_path / "set")
    assert code == 0, out
    metrics = json.loads(out[out.index("{"):])
    assert list(metrics) == ["layers.0.resid_post", "layers.2.resid_post"]
    assert json.loads((tmp_path / "set" / "sae_set.json").read_text())["sites"] == list(metrics)
    for site in metrics:
        code, out = invoke("train", "--activations", tmp_path / "acts" / site, *options, "--out", tmp_path / site)
        assert code == 0, out
        assert json.loads(out[out.index("{"):]) == metrics[site]
        for name in ("cfg.json", "sae_weights.safetensors", "metrics.json"):
            assert (tmp_path / "set" / site / name).read_bytes() == (tmp_path / site / name).read_bytes()
        assert load_sae(tmp_path / "set" / site).cfg.provenance.site.name == site


@pytest.mark.parametrize("bf16_cpu", [False, True])
def test_training_in_bfloat16_by_name_warns_where_the_cpu_has_no_fast_bf16(monkeypatch, tmp_path, bf16_cpu):
    pretend_cpu(monkeypatch, amx=bf16_cpu)
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32))
    code, out = invoke("train", "--activations", tmp_path / "acts.npy", "--features", 16, "--k", 4, "--tokens", 256,
                       "--batch-size", 64, "--dtype", "bfloat16", "--device", "cpu", "--out", tmp_path / "sae")
    assert code == 0, out
    assert ("warning: bfloat16 on this cpu has no fast bf16 matmuls" in out) is not bf16_cpu
