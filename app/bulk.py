"""Writing many rows into one table inside the session's transaction: the store's bulk path (issue 22).

Rows come as plain tuples in the order of `columns`, JSON columns as Python values (or as JSON text, where the
column is named by a JsonText). `copy_rows` is the fast path: PostgreSQL's binary COPY through psycopg, SQLite's
executemany of tuples on the driver's cursor, JSON serialised once here. `insert_rows` is the reference it is
tested equal to (tests/app/test_bulk.py): SQLAlchemy Core inserts of row dicts, where every value goes through
its column type's bind processing. At a million features that processing, not the database, was the import's cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any

from sqlalchemy import JSON, Connection, Table, insert
from sqlalchemy.orm import Session

from .models import Base

BATCH_ROWS = 5000
"""Rows per executemany; large enough to amortise round trips, small enough to bound memory."""

IMPORT_CACHE_KIB = 512 * 1024
"""SQLite page cache of the connection while it imports (the default is 2 MiB): with it, a million features'
index pages stay in memory through the transaction instead of being spilled and reread."""


class JsonText(str):
    """The name of a JSON column whose values come as JSON text: the row builder wrote it itself, for speed.
    The marker is on the column, not on each value: wrapping every value cost a copy of its text."""


Writer = Callable[[Session, type[Base], Sequence[str], Iterable[tuple[Any, ...]]], None]
"""How rows reach a table: `copy_rows` or the reference `insert_rows`."""


def batches(rows: Iterable[tuple[Any, ...]], size: int = BATCH_ROWS) -> Iterator[list[tuple[Any, ...]]]:
    """Cut a row stream into lists of at most `size`."""
    stream = iter(rows)
    while batch := list(islice(stream, size)):
        yield batch


def table_of(model: type[Base]) -> Table:
    """The model's table as a schema Table (its columns' types are what the writers look at)."""
    return model.metadata.tables[model.__tablename__]


def insert_rows(session: Session, model: type[Base], columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """The reference writer: Core executemany of dicts, each value bound through its column's type."""
    table = table_of(model)
    texts = [isinstance(name, JsonText) for name in columns]
    for batch in batches(rows):
        session.execute(insert(table), [{name: json.loads(value) if is_text else value
                                          for name, is_text, value in zip(columns, texts, row)} for row in batch])


def copy_rows(session: Session, model: type[Base], columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """The fast writer: COPY on PostgreSQL, executemany of tuples on SQLite, on the session's own connection."""
    table = table_of(model)
    connection = session.connection()
    driver = driver_connection(connection)
    stream = _json_dumped(table, columns, rows)
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        with driver.cursor() as cursor:
            oids = _copy_oids(cursor, table.name, columns)
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(oids)
                for row in stream:
                    copy.write_row(row)
        return
    cursor = driver.cursor()
    try:
        statement = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"
        for batch in batches(stream):
            cursor.executemany(statement, batch)
    finally:
        cursor.close()


JSON_OID, TEXT_OID = 114, 25


def _copy_oids(cursor: Any, table: str, columns: Sequence[str]) -> list[int]:
    """The type of each column for a binary COPY, asked of the server, as psycopg dumps values for it: binary
    COPY sends floats and bytes as they are, where text COPY formats and the server parses every one. A json
    column's binary form is its text, so its (JSON text) values go as text."""
    cursor.execute("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                   (table,))
    oid_of = dict(cursor.fetchall())
    return [TEXT_OID if oid_of[name] == JSON_OID else oid_of[name] for name in columns]


def driver_connection(connection: Connection) -> Any:
    """The DBAPI driver's own connection under `connection` (sqlite3's or psycopg's)."""
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the session's connection has no driver connection")
    return driver


def _json_dumped(table: Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> Iterable[tuple[Any, ...]]:
    """The rows with their JSON columns as text, serialised as SQLAlchemy's JSON type does (json.dumps), but for
    the JsonText columns, which are text already."""
    positions = [i for i, name in enumerate(columns)
                 if isinstance(table.c[name].type, JSON) and not isinstance(name, JsonText)]
    if not positions:
        return rows
    dumps = json.dumps

    def dumped(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i in positions:
            values[i] = dumps(values[i])  # None too, as JSON null, like the JSON type
        return tuple(values)

    return map(dumped, rows)



@contextmanager
def import_cache(session: Session) -> Iterator[None]:
    """On SQLite, a page cache of IMPORT_CACHE_KIB for the session's connection while the block runs (its
    commit included), the connection's own size put back after; the transaction and its guarantees are
    untouched. PostgreSQL's buffers are the server's: a no-op there."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = driver_connection(connection)  # outlives the session's transaction, unlike `connection`
    before = driver.execute("PRAGMA cache_size").fetchone()[0]
    driver.execute(f"PRAGMA cache_size = -{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        driver.execute(f"PRAGMA cache_size = {int(before)}")
