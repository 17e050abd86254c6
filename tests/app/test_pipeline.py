"""The import/record pipeline: reports beside an SAE reach its row, and recording contexts fit the SAE."""

import json

import pytest

from app import crud
from app.pipeline import DEFAULT_RECORD_CONTEXT, read_sae, record_context_len, register_sae, report_fields
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.saes.artifact import write_metrics
from sae_core.sites import parse_site


def saved_sae(directory, context_len=None):
    provenance = Provenance(model="tiny", site=parse_site("layers.1.resid_post"), context_len=context_len)
    return build_sae(SAEConfig(architecture="relu", d_in=32, d_sae=24, provenance=provenance)).save(directory)


def test_register_stores_the_reports_and_a_reread_picks_up_new_ones(session, tmp_path):
    directory = saved_sae(tmp_path / "sae")
    write_metrics(directory, {"fvu": 0.25, "ce_clean": float("nan")})
    (directory / "training_log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    loaded = read_sae(directory)
    row = register_sae(session, loaded=loaded)
    assert loaded.source_format == "saelens"
    assert row.eval_metrics == {"fvu": 0.25, "ce_clean": None} and row.training_log == [{"step": 1, "loss": 2.0}]
    write_metrics(directory, {"ce_loss_recovered": 0.9})  # as `saescope eval --save` does later
    assert report_fields(loaded)["eval_metrics"] == {"fvu": 0.25, "ce_clean": None, "ce_loss_recovered": 0.9}


def test_a_corrupt_report_registers_nothing(session, tmp_path):
    directory = saved_sae(tmp_path / "sae")
    (directory / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt report"):
        register_sae(session, loaded=read_sae(directory))
    session.rollback()
    assert crud.list_saes(session) == []


def test_recording_contexts_default_to_the_sae_s_own_length(tmp_path):
    trained_on_64 = read_sae(saved_sae(tmp_path / "a", context_len=64))
    unknown = read_sae(saved_sae(tmp_path / "b"))
    assert record_context_len(trained_on_64, None) == 64 and record_context_len(trained_on_64, 32) == 32
    assert record_context_len(unknown, None) == DEFAULT_RECORD_CONTEXT == 128
