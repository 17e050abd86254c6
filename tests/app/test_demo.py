"""The demo pipeline end to end on a tiny model: every stage runs once, a second run reuses them all."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import app
from app import crud
from app.db import make_engine, session_factory

runner = CliRunner()


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"Note {i}: the {['red', 'blue', 'green'][i % 3]} box holds {i} stones." for i in range(200)))
    return path


def run_demo(tmp_path, tiny_model_dir, corpus, **overrides):
    options = {"--out": tmp_path / "demo", "--model": tiny_model_dir, "--site": "layers.1.resid_post",
               "--dataset": corpus, "--tokens": 2000, "--features": 64, "--k": 4, "--train-tokens": 4096,
               "--record-tokens": 1500, "--model-dtype": "float32", **overrides}
    args = ["demo"] + [str(part) for item in options.items() for part in item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_runs_every_stage_then_reuses_them(tmp_path, tiny_model_dir, corpus):
    first = run_demo(tmp_path, tiny_model_dir, corpus)
    assert "[1/4] harvesting 2000" in first and "[2/4] training" in first and "[4/4] recording 64" in first
    second = run_demo(tmp_path, tiny_model_dir, corpus)
    assert "[1/4] activations: reusing" in second and "[2/4] SAE: reusing" in second
    assert "[4/4] features: already recorded" in second and "loading" not in second

    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'saescope.db'}")
    with session_factory(engine)() as session:
        [sae] = crud.list_saes(session)
        assert sae.d_sae == 64 and sae.n_tokens >= 1500 and sae.recorded_at is not None
        assert {"fvu", "l0", "dead_fraction", "ce_loss_recovered"} <= set(sae.eval_metrics)
        assert crud.feature_page(session, sae_id=sae.id, feature_index=0) is not None
    engine.dispose()
    [sae_dir] = (tmp_path / "demo").glob("sae-*")
    assert json.loads((sae_dir / "metrics.json").read_text())["eval_rows"] == "held-out tail"


def test_changing_the_dictionary_reruns_training_beside_the_old_one(tmp_path, tiny_model_dir, corpus):
    run_demo(tmp_path, tiny_model_dir, corpus)
    output = run_demo(tmp_path, tiny_model_dir, corpus, **{"--features": 32})
    assert "[1/4] activations: reusing" in output and "[2/4] training a TopK SAE (32 features" in output
    assert len(list((tmp_path / "demo").glob("sae-*"))) == 2


def test_demo_with_an_unknown_model_is_a_one_line_error(tmp_path, corpus):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--model", str(tmp_path / "nothing"),
                                 "--dataset", str(corpus)])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
