"""The bulk import path (COPY on PostgreSQL, executemany of tuples on SQLite) writes the rows the reference
writer (SQLAlchemy Core inserts bound through the column types) writes, on both backends."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sqlalchemy import select

from app import bulk, crud, ingest
from app.models import Coactivation, Context, Example, Feature, TokenText
from sae_core.records.directions import TopTable


def stored_rows(session, sae_id: int) -> dict[str, list]:
    """Every recorded row of an SAE as plain values, row ids replaced by what they point at."""
    conn = session.connection()
    features = conn.execute(select(Feature).where(Feature.sae_id == sae_id).order_by(Feature.feature_index)).all()
    contexts = conn.execute(select(Context.context_index, Context.start, Context.token_ids, Context.pieces)
                            .where(Context.sae_id == sae_id).order_by(Context.context_index, Context.start)).all()
    examples = conn.execute(
        select(Feature.feature_index, Context.context_index, Context.start, Example.interval, Example.rank,
               Example.peak, Example.value, Example.acts)
        .join(Feature, Example.feature_id == Feature.id).join(Context, Example.context_id == Context.id)
        .where(Feature.sae_id == sae_id).order_by(Feature.feature_index, Example.interval, Example.rank)).all()
    texts = conn.execute(select(TokenText.token_id, TokenText.text).where(TokenText.sae_id == sae_id)
                         .order_by(TokenText.token_id)).all()
    partners = conn.execute(select(Coactivation.feature_index, Coactivation.partners)
                            .where(Coactivation.sae_id == sae_id).order_by(Coactivation.feature_index)).all()
    return {"features": [tuple(row)[2:] for row in features], "contexts": [tuple(r) for r in contexts],
            "examples": [tuple(r) for r in examples], "texts": [tuple(r) for r in texts],
            "partners": [tuple(r) for r in partners]}


def test_the_bulk_path_writes_the_rows_the_reference_writer_does(session, records):
    record = records[0]
    saes = [crud.create_sae(session, name=name, model_name="tiny-llama", site="layers.1.resid_post",
                            architecture="relu", d_in=32, d_sae=record.d_sae) for name in ("reference", "bulk")]
    ingest.store_record(session, sae_id=saes[0].id, record=record, dataset="demo", writer=bulk.insert_rows)
    ingest.store_record(session, sae_id=saes[1].id, record=record, dataset="demo")
    reference, fast = (stored_rows(session, sae.id) for sae in saes)
    assert len(fast["features"]) == record.d_sae and len(fast["examples"]) == len(record.examples.feature_E)
    assert fast["partners"] and fast["texts"]
    assert fast == reference


def test_a_failed_bulk_import_leaves_the_previous_recording_whole(session, records, monkeypatch):
    sae = crud.create_sae(session, name="kept", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=records[0].d_sae)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    before = stored_rows(session, sae.id)

    def failing_examples(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "_insert_examples", failing_examples)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest.store_record(session, sae_id=sae.id, record=records[1], dataset="demo")
    assert stored_rows(session, sae.id) == before


def float32s(pairs: list[list]) -> list[list]:
    """Pairs with their last item (the value) as the float32 it was recorded in."""
    return [[*pair[:-1], np.float32(pair[-1])] for pair in pairs]


def test_the_json_columns_written_as_text_are_the_records_values(session, records):
    """The row builder writes the JSON columns as text from whole column tensors; read back, each is the
    feature's own values as `record.feature` gives them (the same float32s), and its co-activation partners
    without the padding."""
    index_FK = records[0].coactive.index_FK.clone()
    index_FK[0, :] = -1  # a feature with no partner has no row
    index_FK[1::2, index_FK.shape[1] // 2:] = -1  # others with only some; the table pads at the end
    record = replace(records[0], coactive=TopTable(index_FK, records[0].coactive.value_FK))
    sae = crud.create_sae(session, name="columns", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=record.d_sae)
    ingest.store_record(session, sae_id=sae.id, record=record, dataset="demo")
    rows = session.connection().execute(select(Feature.hist, Feature.promoted, Feature.suppressed, Feature.neighbours)
                                        .where(Feature.sae_id == sae.id).order_by(Feature.feature_index)).all()
    text = record.token_text
    for index, (hist, promoted, suppressed, neighbours) in enumerate(rows):
        want = record.feature(index)
        assert hist == {"edges": want.hist_edges, "counts": want.hist_counts}
        assert float32s(promoted) == float32s([[t, text.get(t, ""), v] for t, v in want.promoted])
        assert float32s(suppressed) == float32s([[t, text.get(t, ""), v] for t, v in want.suppressed])
        assert float32s(neighbours) == float32s([[j, v] for j, v in want.neighbours])
    coactive = zip(record.coactive.index_FK.tolist(), record.coactive.value_FK.tolist())
    want_partners = {i: [[j, v] for j, v in zip(index, value) if j >= 0] for i, (index, value) in enumerate(coactive)}
    stored = [(i, float32s(p)) for i, p in stored_rows(session, sae.id)["partners"]]
    assert stored == [(i, float32s(p)) for i, p in want_partners.items() if p]


def test_json_numbers_give_back_every_float32_and_float64_exactly():
    """Nine digits for a float32 (seventeen for a float64) read back as the same number, at every magnitude;
    integral values read back as floats; non-finite ones are written as json.dumps writes them."""
    bits = torch.randint(-2**31, 2**31, (200_000,), dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    values = bits.to(torch.int32).view(torch.float32)
    values = torch.cat([values[torch.isfinite(values)], torch.tensor([0.0, -0.0, 1.0, 0.1, 3.4028235e38, 1e-45])])
    read = [json.loads(text) for text in ingest.json_numbers(values)]
    assert all(type(value) is float for value in read)  # integral ones too, as json.dumps writes them
    assert np.array_equal(np.array(read).astype(np.float32).view(np.int32), values.numpy().view(np.int32))
    doubles = torch.randn(10_000, dtype=torch.float64) * 10.0 ** torch.randint(-300, 300, (10_000,))
    assert [json.loads(text) for text in ingest.json_numbers(doubles)] == doubles.tolist()
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.5])
    assert ingest.json_numbers(special) == [json.dumps(v) for v in special.tolist()]


def test_the_rows_do_not_depend_on_the_chunks_their_json_is_formatted_in(session, records, monkeypatch):
    record = records[0]
    saes = [crud.create_sae(session, name=name, model_name="tiny-llama", site="layers.1.resid_post",
                            architecture="relu", d_in=32, d_sae=record.d_sae) for name in ("whole", "chunked")]
    ingest.store_record(session, sae_id=saes[0].id, record=record, dataset="demo")
    monkeypatch.setattr(ingest, "PAIRS_CHUNK", 7)
    ingest.store_record(session, sae_id=saes[1].id, record=record, dataset="demo")
    assert record.d_sae > 14 and stored_rows(session, saes[1].id) == stored_rows(session, saes[0].id)


def test_an_import_gives_the_sqlite_page_cache_back(session, records):
    """The import's larger SQLite page cache is the import's alone: the connection has its own size after."""
    def cache_size() -> int:
        return session.connection().exec_driver_sql("PRAGMA cache_size").scalar_one()

    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("PostgreSQL's buffers are the server's")
    before = cache_size()
    sae = crud.create_sae(session, name="cache", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=records[0].d_sae)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    assert cache_size() == before != -bulk.IMPORT_CACHE_KIB
