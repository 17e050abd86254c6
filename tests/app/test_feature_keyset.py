"""The feature list pages by key (issue 22): walking "next" by cursor gives the pages skipping rows gives, in
both directions of every keyset sort, and the SQLite plan of such a page reads an index, not the table."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import crud, ingest
from app.crud.features import _filtered_features, _keyset_page
from app.crud.labels import current_label_texts
from app.db import make_engine
from app.migrate import upgrade
from app.models import Feature

PER_PAGE = 5


@pytest.fixture()
def recorded(session, records):
    sae = crud.create_sae(session, name="keyset", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=records[0].d_sae)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    return sae


def cursor(row: crud.FeatureRow, sort: str) -> crud.Cursor:
    return ({"index": None, "density": row.density, "max_act": row.max_act, "mean_act": row.mean_act}[sort],
            row.feature_index)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", crud.KEYSET_SORTS)
def test_pages_by_key_are_the_pages_by_number(session, recorded, sort, descending):
    whole, total = crud.list_features(session, sae_id=recorded.id, sort=sort, descending=descending, limit=1000)
    assert total == recorded.d_sae == len(whole)
    values = [cursor(r, sort) for r in whole]
    assert values == sorted(values, key=lambda v: (v[0] or 0, v[1]), reverse=descending)  # ties follow the sort
    walked, after = [], None
    while page := crud.list_features(session, sae_id=recorded.id, sort=sort, descending=descending,
                                     limit=PER_PAGE, after=after)[0]:
        number = len(walked) // PER_PAGE
        assert page == crud.list_features(session, sae_id=recorded.id, sort=sort, descending=descending,
                                          limit=PER_PAGE, offset=number * PER_PAGE)[0]
        walked += page
        after = cursor(page[-1], sort)
    assert walked == whole


def test_a_filtered_page_by_key_keeps_the_filter(session, recorded, records):
    alive = [r.feature_index for r in crud.list_features(session, sae_id=recorded.id, state="alive", limit=1000)[0]]
    first = crud.list_features(session, sae_id=recorded.id, state="alive", limit=3)[0]
    rest = crud.list_features(session, sae_id=recorded.id, state="alive", limit=1000, after=(None, first[-1].feature_index))
    assert [r.feature_index for r in first + rest[0]] == alive
    assert rest[1] == len(alive) == records[0].d_sae - records[0].dead_count


def test_the_next_link_carries_the_cursor_and_old_page_urls_still_work(client, stored_sae):
    sid = stored_sae.id
    first = client.get(f"/saes/{sid}/features?sort=max_act&desc=true&per_page=4").text
    assert "after=" in first and "after_key=" in first
    next_url = next(part for part in first.split('"') if "after=" in part).replace("&amp;", "&")
    by_key = client.get(next_url).text
    by_number = client.get(f"/saes/{sid}/features?sort=max_act&desc=true&per_page=4&page=2").text
    rows = [line for line in by_key.splitlines() if f"/saes/{sid}/features/" in line and "<td" in line]
    assert rows and rows == [line for line in by_number.splitlines()
                             if f"/saes/{sid}/features/" in line and "<td" in line]
    assert "page 2 of" in by_key


@pytest.mark.parametrize("sort", crud.KEYSET_SORTS)
def test_sqlite_reads_a_page_by_key_through_an_index(tmp_path, sort):
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        column = {"index": Feature.feature_index, "density": Feature.density, "max_act": Feature.max_act,
                  "mean_act": Feature.mean_act}[sort]
        stmt = _keyset_page(_filtered_features(1, "all", None, None, current_label_texts(1)), column, True,
                            (None if sort == "index" else 0.5, 10), 0, plain=True).limit(50)
        compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
        plan = [row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))]
    engine.dispose()
    features = [step for step in plan if " features" in step]
    assert features and all("USING INDEX" in step or "USING COVERING INDEX" in step for step in features), plan
    assert not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), plan
