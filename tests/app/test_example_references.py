"""What the examples' references to features and contexts guarantee on both backends: foreign keys on SQLite,
statement-level triggers on PostgreSQL (migration 0014)."""

import sqlite3

import psycopg
import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from app import bulk, crud, ingest
from app.db import make_engine
from app.models import Context, Example, Feature

REFUSED = (IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError)
"""The bulk writer works on the driver's own connection, so it raises the driver's error, not SQLAlchemy's."""
COLUMNS = ("feature_id", "context_id", "interval", "rank", "peak", "value", "acts")


@pytest.fixture()
def stored(session, records):
    sae = crud.create_sae(session, name="tiny", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=24)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    return sae


def example_count(session, **where) -> int:
    query = select(func.count()).select_from(Example)
    for column, value in where.items():
        query = query.where(getattr(Example, column) == value)
    return session.scalar(query)


def named(session, column: str) -> int:
    """An id of `column`'s table that some example names."""
    return session.scalar(select(getattr(Example, column)).order_by(Example.id).limit(1))


def new_row(session, **changes) -> tuple:
    """An example row, as the bulk writer takes it, naming existing rows but for `changes`."""
    row = {"feature_id": named(session, "feature_id"), "context_id": named(session, "context_id"), "interval": None,
           "rank": 0, "peak": 0, "value": 1.0, "acts": b"\0\0", **changes}
    return tuple(row[c] for c in COLUMNS)


@pytest.mark.parametrize("column, table", [("feature_id", Feature), ("context_id", Context)])
@pytest.mark.parametrize("writer", [bulk.copy_rows, bulk.insert_rows])
def test_an_example_naming_a_missing_row_is_refused_and_nothing_of_its_statement_is_kept(
        session, stored, column, table, writer):
    before = example_count(session)
    missing = session.scalar(select(func.max(table.id))) + 1000
    with pytest.raises(REFUSED):
        writer(session, Example, COLUMNS, [new_row(session), new_row(session, **{column: missing})])
    session.rollback()
    assert example_count(session) == before
    writer(session, Example, COLUMNS, [new_row(session)])  # a row naming existing ones goes in
    session.commit()
    assert example_count(session) == before + 1


@pytest.mark.parametrize("column", ["feature_id", "context_id"])
def test_moving_an_example_to_a_missing_row_is_refused(session, stored, column):
    example = session.scalar(select(Example.id).limit(1))
    with pytest.raises(IntegrityError):
        session.execute(update(Example).where(Example.id == example).values({column: 10**9}))
        session.flush()
    session.rollback()
    assert session.get(Example, example) is not None


@pytest.mark.parametrize("column, table", [("feature_id", Feature), ("context_id", Context)])
def test_deleting_a_feature_or_context_deletes_its_examples_only(session, stored, column, table):
    target = named(session, column)
    mine, before = example_count(session, **{column: target}), example_count(session)
    assert mine > 0
    session.execute(delete(table).where(table.id == target))
    session.commit()
    assert example_count(session, **{column: target}) == 0
    assert example_count(session) == before - mine > 0


def test_deleting_the_sae_deletes_every_example(session, stored):
    session.execute(text("DELETE FROM saes WHERE id = :id"), {"id": stored.id})
    session.commit()
    assert example_count(session) == 0


@pytest.mark.parametrize("column, table", [("feature_id", Feature), ("context_id", Context)])
def test_changing_the_id_of_a_named_row_is_refused_but_other_updates_go_through(session, stored, column, table):
    target = named(session, column)
    with pytest.raises(IntegrityError):
        session.execute(update(table).where(table.id == target).values(id=10**9))
        session.flush()
    session.rollback()
    assert session.get(table, target) is not None
    other_column = {Feature: "top_text", Context: "start"}[table]
    session.execute(update(table).where(table.id == target).values({other_column: getattr(table, other_column)}))
    session.commit()


@pytest.mark.parametrize("column, table", [("feature_id", Feature), ("context_id", Context)])
def test_a_row_no_example_names_may_take_another_id(session, stored, column, table):
    target = named(session, column)
    session.execute(delete(Example).where(getattr(Example, column) == target))
    session.execute(update(table).where(table.id == target).values(id=10**9))
    session.commit()
    assert session.get(table, 10**9) is not None


def test_rows_another_transaction_created_stay_until_the_insert_commits(session, stored, db_url):
    """The check locks the rows it relies on, as a foreign key's does: a delete of the feature waits."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    session.commit()
    target = named(session, "feature_id")
    bulk.copy_rows(session, Example, COLUMNS, [new_row(session)])  # not committed: holds its lock
    other = make_engine(db_url)
    try:
        with other.connect() as conn:
            conn.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                conn.execute(delete(Feature).where(Feature.id == target))
            conn.rollback()
        session.commit()
        with other.begin() as conn:
            conn.execute(delete(Feature).where(Feature.id == target))
    finally:
        other.dispose()
    assert example_count(session, feature_id=target) == 0
