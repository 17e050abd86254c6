import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from app import crud, ingest
from app.crud.text_search import POSTGRES_SEARCH_INDEXES, SQLITE_SEARCH_TABLES
from app.migrate import alembic_config, upgrade
from app.models import STATEMENT_CHECKED_KEYS, Base, Context, Example, Label
from app.steer_schemas import ExperimentOut, RowOut, SteerIn


def add_sae(session, name="tiny", d_sae=24):
    return crud.create_sae(session, name=name, model_name="tiny-llama", site="layers.1.resid_post",
                           architecture="relu", d_in=32, d_sae=d_sae)


def stored_top_values(session, sae_id, index):
    page = crud.feature_page(session, sae_id=sae_id, feature_index=index)
    return [e.value for e in page.top]


def test_migrated_schema_matches_the_models(engine):
    """Everything but the text search index, which is one database's own (an FTS5 table on SQLite, GIN trigram
    indexes on PostgreSQL) and checked in tests/app/test_text_search.py, and on PostgreSQL the examples' foreign
    keys, which triggers enforce there (tests/app/test_example_references.py)."""
    def portable(name, type_, _parents) -> bool:
        return name not in (SQLITE_SEARCH_TABLES if type_ == "table" else POSTGRES_SEARCH_INDEXES)

    def expected(diff) -> bool:
        return engine.dialect.name != "postgresql" or not (
            diff[0] == "add_fk" and diff[1].name in STATEMENT_CHECKED_KEYS)

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": portable}), Base.metadata)
    assert [d for d in diff if expected(d)] == []
    if engine.dialect.name == "postgresql":
        assert {d[1].name for d in diff} == STATEMENT_CHECKED_KEYS


def test_token_texts_are_stored_and_rebuilt_from_the_windows_by_the_migration(session, records, db_url):
    record = records[0]
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=record, dataset="demo")
    assert crud.token_texts(session, sae_id=sae.id) == record.token_text
    session.close()
    command.downgrade(alembic_config(db_url), "0001")  # a store recorded before the table existed
    upgrade(db_url)
    shown = set(record.examples.tokens_EW.flatten().tolist())
    assert crud.token_texts(session, sae_id=sae.id) == {t: record.token_text[t] for t in shown}


def test_feature_page_gathers_its_label_history_tags_and_its_neighbours_current_labels(session, records):
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    neighbours = [n[0] for n in crud.feature_page(session, sae_id=sae.id, feature_index=0).feature.neighbours]
    elsewhere = next(i for i in range(1, sae.d_sae) if i not in neighbours)
    for index, text in [(0, "first"), (neighbours[0], "old"), (0, "second"), (neighbours[0], "new"), (elsewhere, "x")]:
        crud.add_label(session, sae_id=sae.id, feature_index=index, text=text)
    crud.tag_feature(session, sae_id=sae.id, feature_index=0, tag="polysemantic")
    page = crud.feature_page(session, sae_id=sae.id, feature_index=0)
    assert [label.text for label in page.labels] == ["second", "first"]
    assert sorted(page.neighbours) == sorted(neighbours)
    assert {i: brief.label for i, brief in page.neighbours.items() if brief.label} == {neighbours[0]: "new"}
    assert page.tags == ["polysemantic"]
    assert crud.feature_page(session, sae_id=sae.id, feature_index=neighbours[0]).tags == []


def test_feature_page_returns_exactly_what_was_recorded(session, records):
    record = records[0]
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=record, dataset="demo")
    for index in range(record.d_sae):
        expected = record.feature(index)
        page = crud.feature_page(session, sae_id=sae.id, feature_index=index)
        assert page.feature.density == pytest.approx(expected.density)
        assert page.feature.max_act == pytest.approx(expected.max_act)
        assert [e.value for e in page.top] == pytest.approx([e.value for e in expected.top])
        assert [e.token_ids for e in page.top] == [e.token_ids for e in expected.top]
        for got, want in zip(page.top, expected.top):
            assert got.acts == pytest.approx(want.acts)
        assert sum(len(v) for v in page.quantiles.values()) == len(expected.quantiles)
        assert [p[0] for p in page.feature.neighbours] == [n[0] for n in expected.neighbours]
        assert all(len(e.pieces) == len(e.token_ids) for e in page.top)
    sae = crud.find_sae(session, ref="tiny")
    assert sae.n_tokens == record.n_tokens and sae.dead_count == record.dead_count
    assert sum(sae.density_histogram["counts"]) == record.d_sae - record.dead_count


def test_windows_are_stored_once(session, records):
    record = records[0]
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=record, dataset="demo")
    ex = record.examples
    distinct = len({(c, s) for c, s in zip(ex.context_E.tolist(), ex.start_E.tolist())})
    assert session.scalar(select(func.count()).select_from(Context)) == distinct
    assert session.scalar(select(func.count()).select_from(Example)) == len(ex.feature_E)


def test_recording_again_replaces_the_data_and_keeps_labels(session, records):
    first, second = records
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=first, dataset="demo")
    crud.add_label(session, sae_id=sae.id, feature_index=3, text="numbers")
    ingest.store_record(session, sae_id=sae.id, record=second, dataset="demo")
    assert stored_top_values(session, sae.id, 5) == pytest.approx([e.value for e in second.feature(5).top])
    assert session.scalar(select(func.count()).select_from(Example)) == len(second.examples.feature_E)
    assert crud.feature_page(session, sae_id=sae.id, feature_index=3).label == "numbers"


@pytest.mark.parametrize("crash", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_crash_while_storing_loses_nothing_that_was_there(session, records, monkeypatch, crash):
    first, second = records
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=first, dataset="demo")
    before = [stored_top_values(session, sae.id, i) for i in range(first.d_sae)]

    def explode(*args, **kwargs):
        raise crash

    monkeypatch.setattr(ingest, "_insert_examples", explode)
    with pytest.raises(type(crash)):
        ingest.store_record(session, sae_id=sae.id, record=second, dataset="other")
    session.expire_all()
    assert [stored_top_values(session, sae.id, i) for i in range(first.d_sae)] == before
    assert crud.find_sae(session, ref=sae.id).dataset == "demo"
    assert session.scalar(select(func.count()).select_from(Example)) == len(first.examples.feature_E)


def test_a_record_of_the_wrong_size_is_refused(session, records):
    sae = add_sae(session, d_sae=10)
    with pytest.raises(ingest.IngestError, match="24 features but SAE 'tiny' has 10"):
        ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")


def test_many_saes_live_side_by_side(session, records):
    a, b = add_sae(session, "a"), add_sae(session, "b")
    ingest.store_record(session, sae_id=a.id, record=records[0], dataset="demo")
    ingest.store_record(session, sae_id=b.id, record=records[1], dataset="demo")
    ingest.store_record(session, sae_id=a.id, record=records[0], dataset="demo")
    assert stored_top_values(session, b.id, 2) == pytest.approx([e.value for e in records[1].feature(2).top])
    assert stored_top_values(session, a.id, 2) == pytest.approx([e.value for e in records[0].feature(2).top])
    assert [s.name for s in crud.list_saes(session)] == ["a", "b"]


def test_duplicate_sae_name_is_a_clear_error(session):
    add_sae(session)
    with pytest.raises(crud.Conflict, match="already in the store"):
        add_sae(session)


def test_feature_list_sorts_filters_and_searches(session, records):
    record = records[0]
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=record, dataset="demo")
    rows, total = crud.list_features(session, sae_id=sae.id, sort="max_act", descending=True, limit=5)
    assert total == record.d_sae
    assert [r.max_act for r in rows] == pytest.approx(sorted(record.max_F.tolist(), reverse=True)[:5])
    rows, _ = crud.list_features(session, sae_id=sae.id, sort="density", limit=100)
    assert [r.density for r in rows] == sorted(r.density for r in rows)
    crud.add_label(session, sae_id=sae.id, feature_index=7, text="first try")
    crud.add_label(session, sae_id=sae.id, feature_index=7, text="Dates 100%")
    crud.add_label(session, sae_id=sae.id, feature_index=2, text="commas")
    rows, total = crud.list_features(session, sae_id=sae.id, state="labelled", sort="label")
    assert [(r.feature_index, r.label) for r in rows] == [(7, "Dates 100%"), (2, "commas")]
    assert crud.list_features(session, sae_id=sae.id, state="unlabelled")[1] == record.d_sae - 2
    assert [r.feature_index for r in crud.list_features(session, sae_id=sae.id, query="dates 100%")[0]] == [7]
    assert crud.list_features(session, sae_id=sae.id, query="first try") == ([], None)  # a search is not counted
    crud.tag_feature(session, sae_id=sae.id, feature_index=4, tag="syntax")
    crud.tag_feature(session, sae_id=sae.id, feature_index=4, tag="syntax")
    assert [r.feature_index for r in crud.list_features(session, sae_id=sae.id, tag="syntax")[0]] == [4]
    dead = crud.list_features(session, sae_id=sae.id, state="dead")[1]
    assert dead == record.dead_count
    shown = next(r for r in crud.list_features(session, sae_id=sae.id, limit=100)[0] if r.top_text.strip())
    peak = next(token for token in shown.top_text.split(" ") if token)
    found = crud.list_features(session, sae_id=sae.id, query=peak, limit=100)[0]
    assert shown.feature_index in [r.feature_index for r in found]
    assert all(peak.lower() in f"{r.top_text} {r.label or ''}".lower() for r in found)


def test_unknown_sort_or_filter_is_a_clear_error(session):
    sae = add_sae(session)
    with pytest.raises(ValueError, match="unknown sort 'size'"):
        crud.list_features(session, sae_id=sae.id, sort="size")
    with pytest.raises(ValueError, match="unknown filter 'odd'"):
        crud.list_features(session, sae_id=sae.id, state="odd")


def test_label_history_is_kept_with_author(session):
    sae = add_sae(session)
    user = crud.create_user(session, name="ada", password_hash="x", role="labeller")
    crud.add_label(session, sae_id=sae.id, feature_index=1, text="old", author_id=user.id)
    crud.add_label(session, sae_id=sae.id, feature_index=1, text="new", source="auto")
    history = crud.label_history(session, sae_id=sae.id, feature_index=1)
    assert [(h.text, h.author.name if h.author else None) for h in history] == [("new", None), ("old", "ada")]
    assert crud.current_labels(session, sae_id=sae.id)[1].text == "new"
    with pytest.raises(ValueError, match="cannot be empty"):
        crud.add_label(session, sae_id=sae.id, feature_index=1, text="  ")
    assert session.scalar(select(func.count()).select_from(Label)) == 2


def test_users_tokens_bookmarks_and_steering(session):
    sae = add_sae(session)
    user = crud.create_user(session, name="ada", password_hash="h")
    with pytest.raises(crud.Conflict):
        crud.create_user(session, name="ada", password_hash="h")
    crud.add_api_token(session, user_id=user.id, name="laptop", token_hash="abc")
    assert crud.user_for_token(session, token_hash="abc").name == "ada"
    lst = crud.create_bookmark_list(session, owner_id=user.id, name="good ones")
    crud.add_bookmark(session, list_id=lst.id, sae_id=sae.id, feature_index=3, note="a")
    crud.add_bookmark(session, list_id=lst.id, sae_id=sae.id, feature_index=3, note="b")
    session.refresh(lst)
    assert [(b.feature_index, b.note) for b in lst.bookmarks] == [(3, "b")]
    request = SteerIn(sae_id=sae.id, prompt="Hi", interventions=[{"feature": 3, "mode": "add", "value": 4.0}],
                      max_new_tokens=8)
    rows = [RowOut(row=i, label=label, strength=None, text=text, token_ids=[5, 6], finished="length")
            for i, (label, text) in enumerate([("baseline", "Hey"), ("steered", "Hello")])]
    crud.save_steering(session, owner_id=user.id, **request.experiment_fields(rows))
    [saved] = crud.steering_experiments(session, owner_id=user.id)
    assert saved.steered_text == "Hello" and ExperimentOut.of(saved, "ada").request() == request
    session.delete(sae)  # an SAE's rows go with it: the schema cascades
    session.commit()
    assert crud.steering_experiments(session) == []
    with pytest.raises(crud.NotFound):
        crud.find_sae(session, ref="tiny")


def test_a_store_with_a_feature_explained_twice_is_not_migrated_past_it_and_keeps_both(session, db_url, engine):
    from sqlalchemy import text

    sae = add_sae(session)
    session.close()
    command.downgrade(alembic_config(db_url), "0009_feature_keyset")  # before one explanation per feature
    with engine.begin() as conn:  # what two explain jobs at once could leave
        for draft in ("first", "second"):
            conn.execute(text("INSERT INTO explanations (sae_id, feature_index, text, explainer_model, scorer_model, "
                              "prompt_version, scores, status, created_at) VALUES (:s, 3, :t, 'e', 'e', 'v', '{}', "
                              "'draft', CURRENT_TIMESTAMP)"), {"s": sae.id, "t": draft})
    with pytest.raises(RuntimeError, match="1 features have more than one explanation"):
        upgrade(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT text FROM explanations ORDER BY id")).scalars().all() == ["first", "second"]
        conn.execute(text("DELETE FROM explanations WHERE text = 'second'"))
        conn.commit()
    upgrade(db_url)
