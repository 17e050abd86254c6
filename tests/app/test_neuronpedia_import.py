"""A Neuronpedia export goes into Neuronpedia's own schema the way its importer puts it there, twice.

The schema is Neuronpedia's Prisma migrations (vendored in neuronpedia_schema/), applied to a throw-away
PostgreSQL database; the import is tests/app/neuronpedia_importer.py, which follows its importer step by step.
"""

from __future__ import annotations

import gzip
import itertools
import json
import uuid
from pathlib import Path

import psycopg
import pytest

from app import crud, ingest
from app.export import export_sae
from app.neuronpedia import NeuronpediaTarget
from tests.app.conftest import PG_ADMIN, pg_admin
from tests.app.neuronpedia_importer import BOT_USER_ID, ImportRefused, apply_schema, import_dataset, seed_bot_user


@pytest.fixture(scope="module")
def neuronpedia_db():
    """A database holding Neuronpedia's schema and its seed's bot user, dropped afterwards."""
    admin = pg_admin()
    name = f"neuronpedia_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN.replace("dbname=test", f"dbname={name}")
        with psycopg.connect(url, autocommit=True) as conn:
            apply_schema(conn)
            seed_bot_user(conn)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture()
def np_conn(neuronpedia_db):
    """A connection whose writes are rolled back, so every test starts from the seeded schema."""
    with psycopg.connect(neuronpedia_db) as conn:
        yield conn
        conn.rollback()


@pytest.fixture()
def stored(session, records):
    sae = crud.create_sae(session, name="Tiny SAE", model_name="Tiny Llama", model_spec="org/tiny-llama",
                          site="layers.1.resid_post", hook_name="blocks.1.hook_resid_post", architecture="relu",
                          d_in=32, d_sae=24)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    user = crud.create_user(session, name="ada", password_hash="h")
    crud.add_label(session, sae_id=sae.id, feature_index=5, text="quotes", author_id=user.id)
    crud.add_label(session, sae_id=sae.id, feature_index=5, text="closing quotes", author_id=user.id)
    crud.add_label(session, sae_id=sae.id, feature_index=9, text="digits", source="auto")
    return sae


TARGET = NeuronpediaTarget(model_id="tiny-llama", model_layers=2, source_set="res-tiny")


def export(session, sae, tmp_path: Path, monkeypatch, per_batch: int = 10) -> Path:
    monkeypatch.setattr("app.neuronpedia.FEATURES_PER_BATCH", per_batch)
    return export_sae(session, sae_ref=sae.id, fmt="neuronpedia", out=tmp_path / "v1", target=TARGET)


def count(conn, table: str) -> int:
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_a_fresh_import_creates_every_row_and_a_repeated_one_adds_nothing(session, stored, records, tmp_path,
                                                                            monkeypatch, np_conn):
    directory = export(session, stored, tmp_path, monkeypatch)
    assert directory == tmp_path / "v1" / "tiny-llama" / "1-res-tiny"
    n_examples = len(records[0].examples.feature_E)
    first = import_dataset(np_conn, directory, "tiny-llama")
    assert first == {"Model": 1, "SourceSet": 1, "Source": 1, "Neuron": 24, "Activation": n_examples,
                     "Explanation": 2}
    again = import_dataset(np_conn, directory, "tiny-llama")
    assert again == dict.fromkeys(first, 0)
    assert [count(np_conn, t) for t in first] == list(first.values())


def test_imported_rows_carry_creator_set_bins_and_the_current_label(session, stored, records, tmp_path, monkeypatch,
                                                                    np_conn):
    import_dataset(np_conn, export(session, stored, tmp_path, monkeypatch), "tiny-llama")
    model = np_conn.execute('SELECT "creatorId", layers, "neuronsPerLayer", owner, visibility::text FROM "Model"').fetchone()
    assert model == (BOT_USER_ID, 2, 32, "org", "PUBLIC")
    assert np_conn.execute('SELECT DISTINCT "sourceSetName", "creatorId" FROM "Neuron"').fetchall() == [
        ("res-tiny", BOT_USER_ID)]
    max_act = records[0].max_F[3].item()
    rows = np_conn.execute('SELECT "binMin", "binMax", "binContains" FROM "Activation" WHERE index = %s', ("3",))
    bins = rows.fetchall()
    top = [b for b in bins if b[0] == -1]
    assert len(top) == 4 and {b[2] for b in top} == {-1} and top[0][1] == pytest.approx(max_act)
    quantile = [b for b in bins if b[0] != -1]
    assert quantile and all(0 <= lo < hi <= max_act * (1 + 1e-6) and 0 <= share <= 1 for lo, hi, share in quantile)
    labels = np_conn.execute('SELECT index, description, "authorId", "typeName", notes FROM "Explanation" '
                             "ORDER BY index").fetchall()
    assert labels == [("5", "closing quotes", BOT_USER_ID, None, "saescope label (human by ada)"),
                      ("9", "digits", BOT_USER_ID, None, "saescope label (auto)")]


def test_the_histogram_is_on_equal_width_bins_and_keeps_every_count(session, stored, records, tmp_path, monkeypatch,
                                                                    np_conn):
    import_dataset(np_conn, export(session, stored, tmp_path, monkeypatch), "tiny-llama")
    values, heights, max_act = np_conn.execute(
        'SELECT freq_hist_data_bar_values, freq_hist_data_bar_heights, "maxActApprox" FROM "Neuron" WHERE index = %s',
        ("3",)).fetchone()
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert len(values) == 50 and max(steps) - min(steps) < 1e-6 * max_act
    assert values[-1] + steps[0] / 2 == pytest.approx(max_act)
    assert sum(heights) == records[0].count_F[3].item()


def test_every_row_of_a_batch_has_the_keys_of_its_first_and_each_key_is_a_column(session, stored, tmp_path,
                                                                                   monkeypatch, np_conn):
    directory = export(session, stored, tmp_path, monkeypatch)
    tables = {"features": "Neuron", "activations": "Activation", "explanations": "Explanation"}
    for folder, table in tables.items():
        columns = {r[0] for r in np_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))}
        for path in (directory / folder).glob("*.jsonl.gz"):
            with gzip.open(path, "rt") as f:
                rows = [json.loads(line) for line in f]
            assert all(row.keys() == rows[0].keys() for row in rows), path
            assert set(rows[0]) <= columns, (path, set(rows[0]) - columns)


def test_batches_hold_1024_features(session, stored, tmp_path, monkeypatch):
    from app import neuronpedia

    assert neuronpedia.FEATURES_PER_BATCH == 1024
    directory = export(session, stored, tmp_path, monkeypatch, per_batch=1024)
    assert [p.name for p in (directory / "features").iterdir()] == ["batch-0.jsonl.gz"]


def test_without_its_metadata_files_the_importer_stops(session, stored, tmp_path, monkeypatch, np_conn):
    directory = export(session, stored, tmp_path, monkeypatch)
    (directory / "sourceset.jsonl").unlink()
    with pytest.raises(ImportRefused, match=r"sourceset\.jsonl is missing"):
        import_dataset(np_conn, directory, "tiny-llama")


def test_an_author_the_target_does_not_know_is_refused_there(session, stored, tmp_path, monkeypatch, np_conn):
    monkeypatch.setattr("app.neuronpedia.FEATURES_PER_BATCH", 10)
    target = NeuronpediaTarget(model_id="tiny-llama", model_layers=2, author_id="no-such-user")
    directory = export_sae(session, sae_ref=stored.id, fmt="neuronpedia", out=tmp_path, target=target)
    with pytest.raises(ImportRefused, match="Explanation"):
        import_dataset(np_conn, directory, "tiny-llama")


def test_a_second_export_into_the_same_place_is_refused_and_leaves_it_whole(session, stored, tmp_path, monkeypatch):
    directory = export(session, stored, tmp_path, monkeypatch)
    before = sorted(p.relative_to(directory) for p in directory.rglob("*"))
    with pytest.raises(ValueError, match="already holds files"):
        export(session, stored, tmp_path, monkeypatch)
    assert sorted(p.relative_to(directory) for p in directory.rglob("*")) == before
    assert [p.name for p in directory.parent.iterdir()] == ["1-res-tiny"]


@pytest.mark.parametrize("fields, message", [
    ({"model_id": "Tiny Llama"}, "--model-id 'Tiny Llama' must be"),
    ({"source_set": "res/jb"}, "--source-set 'res/jb' must be"),
    ({"model_layers": 0}, "--model-layers must be positive"),
    ({"visibility": "public"}, "choose one of PUBLIC, UNLISTED, PRIVATE"),
    ({"author_id": " "}, "--author-id must name a user"),
])
def test_bad_targets_are_refused_with_the_option_named(fields, message):
    with pytest.raises(ValueError, match=message):
        NeuronpediaTarget(**{"model_id": "m", "model_layers": 1, **fields})
