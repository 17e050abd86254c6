"""kill -9 of `saescope record` at seeded progress points: read right after each kill, the store holds the SAE's
previous recording (or none) or the new one, never a half; a rerun stores what an uninterrupted recording stores.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from app.cli import app
from app.db import make_engine, session_factory
from app.models import Context, Example, Feature, Sae, TokenText
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.sites import parse_site
from tests.conftest import invoke_cli
from tests.crash import APP, kill_during, kill_points, one_thread, run_command

RECORD_TOKENS = 2000
SUMMARY = ("model_spec", "dataset", "n_tokens", "n_contexts", "record_config", "density_histogram", "dead_count",
           "dense_count", "mean_l0", "eval_metrics", "training_log")
"""The SAE row's columns a recording writes (recorded_at aside: a clock, not data)."""


def recording(url: str, name: str = "crash-sae") -> dict[str, Any]:
    """Everything the store holds of an SAE's recording, without row ids, in a canonical order."""
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            sae = session.scalars(select(Sae).where(Sae.name == name)).one()
            tables = {
                "features": select(*_columns(Feature, "id", "sae_id")).where(Feature.sae_id == sae.id),
                "contexts": select(*_columns(Context, "id", "sae_id")).where(Context.sae_id == sae.id),
                "examples": select(Feature.feature_index, Context.context_index, Context.start,
                                   *_columns(Example, "id", "feature_id", "context_id"))
                .join(Feature, Example.feature_id == Feature.id).join(Context, Example.context_id == Context.id)
                .where(Feature.sae_id == sae.id),
                "token_text": select(TokenText.token_id, TokenText.text).where(TokenText.sae_id == sae.id),
            }
            rows = {name: sorted((tuple(r) for r in session.execute(query)), key=repr) for name, query in tables.items()}
            return {"summary": {c: getattr(sae, c) for c in SUMMARY}, **rows}
    finally:
        engine.dispose()


def _columns(model: type, *leave_out: str) -> list:
    return [c for c in model.__table__.columns if c.name not in leave_out]


def record_args(model_dir, corpus, url, tokens: int = RECORD_TOKENS, n_top: int = 20) -> list[object]:
    return ["record", "--sae", "crash-sae", "--model", model_dir, "--dataset", corpus, "--tokens", tokens,
            "--context", 40, "--n-top", n_top, "--device", "cpu", "--db", url]


def in_process(*args: object) -> float:
    """Seconds a command took through the app's CLI in this process, on one thread as the killed runs use."""
    start = time.monotonic()
    with one_thread():
        code, out = invoke_cli(app, *args)
    assert code == 0, out
    return time.monotonic() - start


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    """A 256-feature ReLU SAE over the tiny Llama's layer 1, scaled so that its features fire."""
    cfg = SAEConfig(architecture="relu", d_in=32, d_sae=256,
                    provenance=Provenance(model="tiny", site=parse_site("layers.1.resid_post")))
    sae = build_sae(cfg, seed=0)
    sae.W_enc.data *= 40.0
    return sae.save(tmp_path_factory.mktemp("crash-record") / "crash-sae")


def store_with_sae(url: str, sae_dir) -> str:
    in_process("import", "--sae", sae_dir, "--name", "crash-sae", "--db", url)
    return url


def test_a_killed_recording_leaves_the_old_or_the_new_one_and_a_rerun_the_new(tmp_path, sae_dir, tiny_model_dir, corpus,
                                                                               db_url, engine):
    """On each backend (`engine` empties the store afterwards); the uninterrupted recording is made on SQLite."""
    reference = store_with_sae(f"sqlite:///{tmp_path / 'reference.db'}", sae_dir)
    seconds = in_process(*record_args(tiny_model_dir, corpus, reference))
    new = recording(reference)
    assert len(new["features"]) == 256 and new["examples"]
    url = store_with_sae(db_url, sae_dir)
    args = record_args(tiny_model_dir, corpus, url)
    outcomes = []
    # A delay of up to half a recording's time reaches past the pass: building the rows, the store's transaction.
    for number, point in enumerate(kill_points(max_delay=seconds / 2)):
        if number:  # from the second kill on, a previous recording stands to be replaced
            in_process(*record_args(tiny_model_dir, corpus, url, tokens=RECORD_TOKENS // 2, n_top=5))
        before = recording(url)
        outcomes.append(kill_during(*APP, *args, at=point, total=RECORD_TOKENS))
        after = recording(url)
        assert after in (before, new), f"kill {number} left a store that is neither the old nor the new"
    assert any(o.killed for o in outcomes)
    run_command(*APP, *args)
    assert recording(url) == new
