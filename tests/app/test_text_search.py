"""The feature list's text search through the trigram index (issue 22): the same features as the scan it replaced,
on both databases, by both of a search's ways (candidates looked up, or the list walked), paged by key in every
sort; the index kept in step with every write; and each statement read through indexes."""

from __future__ import annotations

import pytest
from sqlalchemy import and_, or_, select, text

from app import crud, ingest
from app.crud import text_search
from app.crud.explanations import accept_draft, reject_draft
from app.crud.labels import current_label_texts
from app.models import Explanation, Feature, Sae
from tests.app.query_plans import plans

LABELS = {
    1: ["old cat label", "new dog label"],  # relabelled: only the current label is searched
    2: ["Dog", "plain"],
    3: ["Straße ÉCOLE école"],
    4: ['it\'s "quoted"'],
    5: ["a_b%c/d 50% off"],
    6: ["🐱 猫 cat"],
    7: ["CaSe MiXeD", "CaSe MiXeD again"],
    8: ["tab\there   spaced"],
    9: ["category"],
}
DRAFTS = {10: "draft _x_ zebra", 11: "rejected yak", 12: "accepted gnu", 13: "drafted cat-like"}
QUERIES = ["cat", "CAT", "Cat", "dog", "Dog", "old cat", "new dog", "plain", "zebra", "yak", "gnu", "draft", "50%",
           "%", "_", "_x_", "a_b", "/d", "'", '"quoted"', "it's", "straße", "STRASSE", "école", "ÉCOLE", "École",
           "🐱", "猫", "mixed", "again", "t\th", "   ", "x", "e", "zz", "cat-like", "c/d 50"]


@pytest.fixture()
def searched(session, records):
    """A recorded SAE with the labels (histories), drafts (one rejected, one accepted) above, and a second SAE
    whose labels hold the same words, which no search of the first may return."""
    sae, other = (crud.create_sae(session, name=name, model_name="tiny-llama", site="layers.1.resid_post",
                                  architecture="relu", d_in=32, d_sae=records[0].d_sae) for name in ("a", "b"))
    for row, record in ((sae, records[0]), (other, records[1])):
        ingest.store_record(session, sae_id=row.id, record=record, dataset="demo")
    for index, history in LABELS.items():
        for label in history:
            crud.add_label(session, sae_id=sae.id, feature_index=index, text=label)
        crud.add_label(session, sae_id=other.id, feature_index=index, text="cat dog zebra yak gnu")
    for index, draft in DRAFTS.items():
        session.add(Explanation(sae_id=sae.id, feature_index=index, text=draft, explainer_model="e",
                                scorer_model="s", prompt_version="1", score=index / 100))
    session.commit()
    drafts = {row.feature_index: row for row in session.scalars(select(Explanation).where(Explanation.sae_id == sae.id))}
    reject_draft(session, draft=drafts[11], reviewer_id=None)
    accept_draft(session, draft=drafts[12], reviewer_id=None, base_label_id=None)
    return sae


def queries(session, sae) -> list[str]:
    """QUERIES with a word of a feature's top text (the tiny tokenizer's pieces) and two characters of it."""
    top = next(t for t in session.scalars(select(Feature.top_text).where(Feature.sae_id == sae.id)) if len(t) > 6)
    return [*QUERIES, top[1:6], top[2:4]]


def scan(session, sae_id: int, query: str, whole_words: bool) -> list[int]:
    """The search as it was before the index, written apart from list_features: every feature of the SAE whose
    top text, current label (the grouped newest) or draft the matcher accepts."""
    match = text_search.matcher(query, whole_words)
    label = current_label_texts(sae_id)
    draft = and_(Explanation.sae_id == sae_id, Explanation.feature_index == Feature.feature_index)
    stmt = (select(Feature.feature_index).where(Feature.sae_id == sae_id)
            .outerjoin(label, label.c.feature_index == Feature.feature_index).outerjoin(Explanation, draft)
            .where(or_(match(Feature.top_text), match(label.c.text),
                       and_(Explanation.status == "draft", match(Explanation.text))))
            .order_by(Feature.feature_index))
    return list(session.scalars(stmt))


@pytest.fixture(params=["index", "walk", "stretch"])
def way(request, monkeypatch):
    """Each search looks its candidates up (however many), walks the list (an index that never narrows), or in
    index order first walks a stretch of one feature per row of its page (a page of 1000 reads the whole list
    there; one of 3 mostly goes on past it), then looks up."""
    cap = 0 if request.param == "walk" else 10**9
    monkeypatch.setattr("app.crud.features.candidate_cap", lambda rows, d_sae: cap)
    monkeypatch.setattr("app.crud.features.WALK_FIRST_ROWS", 1 if request.param == "stretch" else 0)
    return request.param


@pytest.mark.parametrize("whole_words", [False, True])
def test_a_search_finds_what_the_scan_found(session, searched, way, whole_words):
    for query in queries(session, searched):
        rows, total = crud.list_features(session, sae_id=searched.id, query=query, whole_words=whole_words, limit=1000)
        assert [r.feature_index for r in rows] == scan(session, searched.id, query, whole_words), (query, way)
        assert total is None


def test_the_cases_that_tell_current_from_old_and_draft_from_reviewed(session, searched, way):
    def found(query: str) -> set[int]:
        return {r.feature_index for r in crud.list_features(session, sae_id=searched.id, query=query, limit=1000)[0]}

    assert {6, 9, 13} <= found("cat") and 1 not in found("cat") | found("old cat") and 1 in found("new dog")
    assert 10 in found("zebra") and 11 not in found("yak") and 12 in found("gnu")  # rejected: none; accepted: a label
    assert found("a_b%c") == {5} and found("_x_") == {10} and found('"quoted"') == {4}


@pytest.mark.parametrize("descending", [False, True])
def test_a_search_asks_the_index_only_where_its_stretch_of_the_list_holds_too_few(session, searched, monkeypatch,
                                                                                  descending):
    asked = []
    monkeypatch.setattr("app.crud.features.candidates", lambda *a, **kw: asked.append(kw["query"]) or None)
    monkeypatch.setattr("app.crud.features.WALK_FIRST_ROWS", 2)

    def search(query: str, after: crud.Cursor | None) -> list[int]:
        return [r.feature_index for r in crud.list_features(session, sae_id=searched.id, query=query, limit=1,
                                                            descending=descending, after=after)[0]]

    assert search("new dog", (None, 3 if descending else 0)) == [1] and asked == []  # the stretch: features 1, 2
    assert search("zebra", None) == [10] and asked == ["zebra"]  # 10 and 13 features from the ends


def test_stretches_go_on_while_what_they_found_says_the_index_would_give_up(session, searched, monkeypatch):
    asked = []
    monkeypatch.setattr("app.crud.features.candidates", lambda *a, **kw: asked.append(kw["query"]) or None)
    monkeypatch.setattr("app.crud.features.candidate_cap", lambda rows, d_sae: 5)
    monkeypatch.setattr("app.crud.features.WALK_FIRST_ROWS", 1)
    for index in range(0, searched.d_sae, 2):
        crud.add_label(session, sae_id=searched.id, feature_index=index, text="qqevery other")
    for index in (1, 3, 5):
        crud.add_label(session, sae_id=searched.id, feature_index=index, text="qqfront")

    def search(query: str) -> list[int]:
        return [r.feature_index for r in crud.list_features(session, sae_id=searched.id, query=query, limit=4)[0]]

    # 2 of the first 4 features: 12 of 24 by that, more than the cap of 5, so the next stretch (8) fills the page
    assert search("qqevery") == [0, 2, 4, 6] and asked == []
    # 2 of the first 4 again, then 1 of the next 8: 12 features walked, past the cap, so the index is asked
    assert search("qqfront") == [1, 3, 5] and asked == ["qqfront"]


def test_candidates_hold_every_match_of_a_query_of_three_characters_or_more(session, searched):
    for query in queries(session, searched):
        found = text_search.candidates(session, sae_id=searched.id, query=query, cap=10**9)
        if len(query) < text_search.MIN_CHARS:
            assert found is None
        else:
            assert found is not None and set(scan(session, searched.id, query, False)) <= set(found), query
            assert found == sorted(found)


def test_more_candidates_than_the_cap_is_none(session, searched):
    assert text_search.candidates(session, sae_id=searched.id, query="draft", cap=2) == [10, 13]
    assert text_search.candidates(session, sae_id=searched.id, query="draft", cap=1) is None


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", crud.KEYSET_SORTS)
def test_a_search_pages_by_key_in_every_sort(session, searched, way, sort, descending):
    whole = crud.list_features(session, sae_id=searched.id, query="a", sort=sort, descending=descending,
                               limit=1000)[0]
    assert len(whole) > 6
    walked, after = [], None
    while page := crud.list_features(session, sae_id=searched.id, query="a", sort=sort, descending=descending,
                                     limit=3, after=after)[0]:
        walked += page
        after = crud.cursor_of(page[-1], sort)
    assert walked == whole


def indexed(session) -> set[tuple[int, str]]:
    """The rows of SQLite's search table."""
    return {tuple(row) for row in session.execute(text(f"SELECT rowid, text FROM {text_search.FTS_TABLE}"))}


def expected_index(session) -> set[tuple[int, str]]:
    """What the search table should hold: each feature's top text, current label and draft, keyed."""
    rows = set()
    for sae_id in session.scalars(select(Sae.id)):
        top = select(Feature.feature_index, Feature.top_text).where(Feature.sae_id == sae_id)
        label = current_label_texts(sae_id)
        drafts = select(Explanation.feature_index, Explanation.text).where(Explanation.sae_id == sae_id,
                                                                          Explanation.status == "draft")
        for kind, stmt in ((text_search.TOP_TEXT, top), (text_search.LABEL, select(label.c.feature_index, label.c.text)),
                           (text_search.DRAFT_TEXT, drafts)):
            rows |= {(text_search._key(sae_id, kind, index), value) for index, value in session.execute(stmt)}
    return rows


def test_sqlite_keeps_its_search_table_in_step_with_every_write(session, searched, records, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's GIN indexes are the database's own to keep")
    assert indexed(session) == expected_index(session)
    crud.add_label(session, sae_id=searched.id, feature_index=1, text="newest")
    ingest.store_record(session, sae_id=searched.id, record=records[1], dataset="again")  # recorded again
    assert indexed(session) == expected_index(session)
    other = session.scalar(select(Sae).where(Sae.id != searched.id))
    session.delete(other)
    session.commit()
    assert indexed(session) == expected_index(session) and len(expected_index(session)) > 24


def test_the_search_index_is_in_the_migrated_schema(session, db_url):
    if db_url.startswith("sqlite"):
        sql = session.scalar(text("SELECT sql FROM sqlite_master WHERE name = :name"), {"name": text_search.FTS_TABLE})
        assert "fts5" in sql and "trigram" in sql
        triggers = set(session.scalars(text("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' "
                                            "AND name LIKE 'feature_search_%'")))
        assert triggers == {"features", "labels", "explanations"}
    else:
        definitions = session.scalars(text("SELECT indexdef FROM pg_indexes WHERE indexname = ANY(:names)"),
                                      {"names": list(text_search.POSTGRES_SEARCH_INDEXES)}).all()
        assert len(definitions) == 3 and all("gin" in d and "gin_trgm_ops" in d for d in definitions)


def reads_no_whole_table(plan: str) -> bool:
    return not any(f"{scan} {table}" in plan for scan in ("SCAN", "Seq Scan on")
                   for table in ("features", "label", "labels", "explanations", "drafted"))


SAE_FIRST_INDEXES_DROPPED = (
    *(f"DROP INDEX {name}" for name in ("ix_labels_sort", "ix_labels_feature", "ix_explanations_sae_score",
                                       "ix_explanations_feature", "ix_features_sae_density_index",
                                       "ix_features_sae_max_act_index", "ix_features_sae_mean_act_index")),
    "ALTER TABLE features DROP CONSTRAINT uq_features_sae_id_feature_index")
"""On PostgreSQL, the indexes that lead with sae_id, which a planner prefers on a table of a few rows: without
them, a statement that the trigram indexes cannot serve shows a sequential scan."""


def test_the_candidates_are_read_through_the_trigram_index(session, searched):
    [plan] = plans(session, lambda: text_search.candidates(session, sae_id=searched.id, query="zebra", cap=100),
                   SAE_FIRST_INDEXES_DROPPED)
    if session.get_bind().dialect.name == "postgresql":
        assert all(f"Bitmap Index Scan on {name}" in plan for name in text_search.POSTGRES_SEARCH_INDEXES), plan
    else:
        assert f"{text_search.FTS_TABLE} VIRTUAL TABLE INDEX" in plan and ":M" in plan, plan


@pytest.mark.parametrize("sort", ["index", "density", "label", "score"])
def test_a_page_of_candidates_looks_each_up(session, searched, sort):
    every = plans(session, lambda: crud.list_features(session, sae_id=searched.id, query="zebra", sort=sort))
    assert all(reads_no_whole_table(plan) for plan in every), every


def test_the_web_apps_postgresql_connections_plan_without_parallel_workers(client, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs no parallel workers")
    for sessions in (client.app.state.session_factory, client.app.state.read_sessions):
        with sessions() as session:
            assert session.scalar(text("SHOW max_parallel_workers_per_gather")) == "0"
