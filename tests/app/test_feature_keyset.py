"""The feature list pages by key (issue 22): walking "next" by cursor gives the pages skipping rows gives, in
both directions of every keyset sort, and the SQLite plan of such a page reads an index, not the table."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import crud, ingest
from app.crud.features import LABEL_SORT_CHARS, Filters, _filtered_features, _keyset_page, label_sort_key
from app.crud.labels import current_label_texts
from app.db import make_engine
from app.migrate import upgrade
from app.models import Explanation, Feature, Label
from tests.app.query_plans import plans

PER_PAGE = 5


@pytest.fixture()
def recorded(session, records):
    sae = crud.create_sae(session, name="keyset", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=records[0].d_sae)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    return sae


def cursor(row: crud.FeatureRow, sort: str) -> crud.Cursor:
    return crud.cursor_of(row, sort)


LONG = "x" * LABEL_SORT_CHARS
LABELS = {3: "beta", 7: "alpha", 1: "beta", 12: LONG + " two", 5: LONG + " one", 20: "Gamma", 9: "gamma"}
"""Ties on the whole label (1 and 3) and on its sorted start only (5 and 12), and case."""
SCORES = {4: 0.5, 8: 0.5, 2: 0.9, 15: None, 11: 0.1}
"""A tie, and an explanation without a score (listed with the unexplained)."""


@pytest.fixture()
def labelled(session, recorded):
    """The recorded SAE with labels (one relabelled, so it has a history) and scored explanations."""
    crud.add_label(session, sae_id=recorded.id, feature_index=9, text="zeta")
    for index, label in LABELS.items():
        crud.add_label(session, sae_id=recorded.id, feature_index=index, text=label)
    for index, score in SCORES.items():
        session.add(Explanation(sae_id=recorded.id, feature_index=index, text=f"draft {index}", explainer_model="e",
                                scorer_model="s", prompt_version="1", score=score))
    session.commit()
    return recorded


def full_order(session, sae_id: int, sort: str, descending: bool) -> list[int]:
    """The label or score sort as one ORDER BY over every feature, written apart from list_features (the current
    label by the grouped newest id): valued features first by (value, index), the rest by index."""
    label = current_label_texts(sae_id)
    value = label_sort_key(label.c.text) if sort == "label" else Explanation.score
    direction = (lambda key: key.desc()) if descending else (lambda key: key.asc())
    stmt = (select(Feature.feature_index).where(Feature.sae_id == sae_id)
            .outerjoin(label, label.c.feature_index == Feature.feature_index)
            .join_from(Feature, Explanation, (Explanation.sae_id == sae_id)
                       & (Explanation.feature_index == Feature.feature_index), isouter=True)
            .order_by(value.is_(None), direction(value), direction(Feature.feature_index)))
    return list(session.scalars(stmt))


def walk(session, sae_id: int, sort: str, descending: bool, between=lambda page: None) -> list[crud.FeatureRow]:
    """Every page by key in turn, calling `between` with each page before asking for the next."""
    walked, after = [], None
    while page := crud.list_features(session, sae_id=sae_id, sort=sort, descending=descending, limit=PER_PAGE,
                                     after=after)[0]:
        walked += page
        between(page)
        after = cursor(page[-1], sort)
    return walked


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", ["label", "score"])
def test_label_and_score_pages_by_key_are_the_full_order_by(session, labelled, sort, descending):
    expected = full_order(session, labelled.id, sort, descending)
    assert len(expected) == labelled.d_sae
    assert [r.feature_index for r in walk(session, labelled.id, sort, descending)] == expected
    by_number = [r.feature_index for number in range(0, labelled.d_sae, PER_PAGE)
                 for r in crud.list_features(session, sae_id=labelled.id, sort=sort, descending=descending,
                                             limit=PER_PAGE, offset=number)[0]]
    assert by_number == expected


@pytest.mark.parametrize("descending", [False, True])
def test_labels_added_and_changed_between_pages_move_as_a_full_order_by_says(session, labelled, descending):
    """Each next page is the rows the full ORDER BY has after the last row shown, as the labels are then."""
    sid, texts = labelled.id, iter(["alpha", "delta", "beta", "omega", LONG + " three", "a", "zz", "beta", "m"])

    def relabel(page: list[crud.FeatureRow]) -> None:
        last = page[-1].feature_index
        for index in (page[0].feature_index, (last * 7 + 3) % labelled.d_sae):  # one seen, one perhaps not yet
            if index != last:
                crud.add_label(session, sae_id=sid, feature_index=index, text=next(texts, "beta"))
        order = full_order(session, sid, "label", descending)
        pages.append(order[order.index(last) + 1:][:PER_PAGE])

    pages: list[list[int]] = []
    walked = walk(session, sid, "label", descending, relabel)
    shown = [[r.feature_index for r in walked[i:i + PER_PAGE]] for i in range(0, len(walked), PER_PAGE)]
    assert shown[1:] == pages[:-1] and pages[-1] == [] and len(shown) > 3


@pytest.mark.parametrize("sort", ["label", "score"])
def test_the_next_link_of_the_label_and_score_sorts_carries_the_cursor(client, session, stored_sae, sort):
    for index, label in LABELS.items():
        crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text=label)
    first = client.get(f"/saes/{stored_sae.id}/features?sort={sort}&per_page=4").text
    assert ("after_text=" in first) == (sort == "label") and "after=" in first
    next_url = next(part for part in first.split('"') if "after=" in part).replace("&amp;", "&")
    by_number = client.get(f"/saes/{stored_sae.id}/features?sort={sort}&per_page=4&page=2").text

    def rows(page: str) -> list[str]:
        return [line for line in page.splitlines() if f"/saes/{stored_sae.id}/features/" in line and "<td" in line]

    assert rows(first) and rows(client.get(next_url).text) == rows(by_number)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", crud.KEYSET_SORTS[:4])
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


@pytest.mark.parametrize("sort", crud.KEYSET_SORTS[:4])
def test_sqlite_reads_a_page_by_key_through_an_index(tmp_path, sort):
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        column = {"index": Feature.feature_index, "density": Feature.density, "max_act": Feature.max_act,
                  "mean_act": Feature.mean_act}[sort]
        stmt = _keyset_page(_filtered_features(1, Filters(), Label.__table__.alias("label")), column, True,
                            (None if sort == "index" else 0.5, 10), 0, plain=True).limit(50)
        compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
        plan = [row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))]
    engine.dispose()
    features = [step for step in plan if " features" in step]
    assert features and all("USING INDEX" in step or "USING COVERING INDEX" in step for step in features), plan
    assert not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), plan


@pytest.mark.parametrize(("sort", "index", "value"), [("label", "ix_labels_sort", "beta"),
                                                       ("score", "ix_explanations_sae_score", 0.5)])
def test_a_label_or_score_page_reads_its_index_in_order(session, labelled, sort, index, value):
    """Each statement of a page by key is planned as a walk down the sort's index, with no sort of the rows
    (on PostgreSQL with sorting priced out, so a small table's cheaper seq scan and sort would show as a Sort)."""
    every = plans(session, lambda: crud.list_features(session, sae_id=labelled.id, sort=sort, descending=True,
                                                      limit=50, after=(value, 10)))
    first = next(plan for plan in every if "features" in plan)  # the page's first part
    assert index in first and "TEMP B-TREE FOR ORDER BY" not in first and " Sort " not in f" {first} ", first


@pytest.mark.parametrize(("sort", "desc", "q"), [("index", False, ""), ("max_act", True, ""), ("label", False, ""),
                                                  ("score", True, ""), ("density", False, "a")])
def test_the_api_pages_by_key_through_next_and_by_number_alike(client, session, stored_sae, sort, desc, q):
    for index, label in LABELS.items():
        crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text=label)
    url = f"/api/saes/{stored_sae.id}/features"
    params = {"sort": sort, "desc": desc, "q": q, "per_page": 4}
    whole = client.get(url, params={**params, "per_page": 100}).json()
    assert whole["next"] is None and whole["features"]
    by_key, by_number, key, number = [], [], {}, 1
    while True:
        page = client.get(url, params={**params, **key}).json()
        by_key += page["features"]
        by_number += client.get(url, params={**params, "page": number}).json()["features"]
        if page["next"] is None:
            break
        key, number = page["next"], number + 1
    assert by_key == by_number == whole["features"]


def test_the_api_refuses_a_cursor_it_cannot_read(client, stored_sae):
    url = f"/api/saes/{stored_sae.id}/features"
    for bad in ({"after": "x"}, {"after": 2**31}, {"after": 3, "after_key": "inf"}, {"after": 3, "after_text": "y" * 201}):
        answer = client.get(url, params=bad)
        assert answer.status_code == 422, bad
