"""The demo pipeline end to end on a tiny model: every stage runs once, a second run reuses them all."""

from __future__ import annotations

import json
import sys

import pytest

from app import crud
from app.cli import app
from app.db import make_engine, session_factory
from app.security import check_password
from tests.conftest import pretend_cpu, run_cli
from tests.spawn import free_port, serving


def run_demo(tmp_path, tiny_model_dir, corpus, **overrides):
    options = {"--out": tmp_path / "demo", "--model": tiny_model_dir, "--site": "layers.1.resid_post",
               "--dataset": corpus, "--tokens": 2000, "--features": 64, "--k": 4, "--train-tokens": 4096,
               "--record-tokens": 1500, "--model-dtype": "float32", **overrides}
    args = ["demo", "--no-serve"] + [str(part) for item in options.items() for part in item]
    result = run_cli(app, *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_runs_every_stage_then_reuses_them(tmp_path, tiny_model_dir, corpus):
    first = run_demo(tmp_path, tiny_model_dir, corpus)
    assert "[1/5] harvesting 2000" in first and "[2/5] training" in first and "[4/5] recording 64" in first
    assert "account 'researcher' (admin) created" in first
    password = first.split("shown only this once: ")[1].split()[0]
    second = run_demo(tmp_path, tiny_model_dir, corpus)
    assert "[1/5] activations: reusing" in second and "[2/5] SAE: reusing" in second
    assert "[4/5] features: already recorded" in second and "loading" not in second
    assert "[5/5] mapping 64 features" in first and "[5/5] feature map of" in second and "reusing the stored one" in second
    assert "password" not in second

    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'saescope.db'}")
    with session_factory(engine)() as session:
        [sae] = crud.list_saes(session)
        assert sae.d_sae == 64 and sae.n_tokens >= 1500 and sae.recorded_at is not None
        assert {"fvu", "l0", "dead_fraction", "ce_loss_recovered"} <= set(sae.eval_metrics)
        strongest, total = crud.list_features(session, sae_id=sae.id, sort="max_act", descending=True, limit=1)
        assert total == 64 and strongest[0].max_act > 0
        page = crud.feature_page(session, sae_id=sae.id, feature_index=strongest[0].feature_index)
        assert page.top and page.top[0].value == pytest.approx(strongest[0].max_act, rel=1e-2)
        user = crud.find_user(session, name="researcher")
        assert user.role == "admin" and check_password(user.password_hash, password)
    engine.dispose()
    [sae_dir] = (tmp_path / "demo").glob("sae-*")
    assert json.loads((sae_dir / "metrics.json").read_text())["eval_rows"] == "held-out tail"


def test_auto_runs_the_model_in_bf16_on_a_cpu_that_has_bf16_matmuls(monkeypatch, tmp_path, tiny_model_dir, corpus):
    pretend_cpu(monkeypatch, amx=True)
    output = run_demo(tmp_path, tiny_model_dir, corpus, **{"--model-dtype": "auto"})
    assert f"loading {tiny_model_dir} (bfloat16)" in output
    [activations] = (tmp_path / "demo").glob("activations-*")
    assert json.loads((activations / "manifest.json").read_text())["model_dtype"] == "bfloat16"


def test_changing_the_dictionary_reruns_training_beside_the_old_one(tmp_path, tiny_model_dir, corpus):
    run_demo(tmp_path, tiny_model_dir, corpus)
    output = run_demo(tmp_path, tiny_model_dir, corpus, **{"--features": 32})
    assert "[1/5] activations: reusing" in output and "[2/5] training a TopK SAE (32 features" in output
    assert len(list((tmp_path / "demo").glob("sae-*"))) == 2


def test_demo_with_an_unknown_model_is_a_one_line_error(tmp_path, corpus):
    result = run_cli(app, "demo", "--out", tmp_path / "d", "--model", tmp_path / "nothing", "--dataset", corpus)
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_a_second_demo_run_serves_the_recorded_sae(tmp_path, tiny_model_dir, corpus):
    run_demo(tmp_path, tiny_model_dir, corpus)
    port = free_port()
    args = [sys.executable, "-m", "app", "demo", "--port", str(port), "--out", str(tmp_path / "demo"),
            "--model", str(tiny_model_dir), "--site", "layers.1.resid_post", "--dataset", str(corpus),
            "--tokens", "2000", "--features", "64", "--k", "4", "--train-tokens", "4096", "--record-tokens", "1500",
            "--model-dtype", "float32"]
    with serving(args, port) as server:
        page = server.page("/saes/1/features")
    assert page is not None and page.status_code == 200, server.output
    assert "demo-" in page.text
    assert "[2/5] SAE: reusing" in server.output and f"http://127.0.0.1:{port}/saes/1/features" in server.output


def test_a_demo_at_several_sites_records_an_sae_per_site_as_one_set(tmp_path, tiny_model_dir, corpus):
    sites = "layers.2.resid_post,layers.0.resid_post"
    first = run_demo(tmp_path, tiny_model_dir, corpus, **{"--site": sites})
    assert first.count("[1/5] harvesting") == 1 and first.count("[2/5] training") == 2
    assert "at layers.0.resid_post" in first and first.count("[4/5] recording 64 features") == 2
    second = run_demo(tmp_path, tiny_model_dir, corpus, **{"--site": sites})
    assert "[2/5] SAE: reusing" in second and second.count("[4/5] features: already recorded") == 2

    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'saescope.db'}")
    with session_factory(engine)() as session:
        [group] = crud.saes_by_set(session)
        assert group.sae_set.name.startswith("demo-") and group.sites == ["layers.0.resid_post", "layers.2.resid_post"]
        assert [sae.name for sae in group.saes] == [f"{group.sae_set.name}/{site}" for site in group.sites]
        for sae in group.saes:
            assert sae.recorded_at is not None and sae.n_tokens >= 1500
            assert {"fvu", "l0", "ce_loss_recovered"} <= set(sae.eval_metrics)
    engine.dispose()
