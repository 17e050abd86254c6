"""Engine and session factory; SQLite gets foreign keys and write-ahead logging on every connection."""

from __future__ import annotations

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs (SQLAlchemy would otherwise look for psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str | URL) -> str:
    """`url` fit to print: its password masked, so errors and logs never carry it."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"  # it cannot be parsed, so nothing in it can be told apart as the password


def make_engine(url: str) -> Engine:
    """An engine for `url`; on SQLite, every connection enforces foreign keys and uses WAL."""
    engine = create_engine(normalise_url(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def serving_engine(url: str) -> Engine:
    """`make_engine` for the web app: on PostgreSQL, every connection plans its queries without parallel workers.

    A page's queries are short and many run at once, one per request, on a machine with few cores: a parallel
    plan only adds its workers' start-up. A text search's index lookup at a million features took 14 ms with
    its two workers and 3.4 ms without, and the workers' CPU came out of the other requests'."""
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _no_parallel_workers)
    return engine


def _no_parallel_workers(dbapi_connection, _record) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET max_parallel_workers_per_gather = 0")
    dbapi_connection.commit()


def read_engine(engine: Engine) -> Engine:
    """`engine` for requests that only read, without a transaction where one costs round trips.

    On PostgreSQL each transaction adds a BEGIN and a ROLLBACK to a page's three or four queries; in
    autocommit each query reads its own snapshot, which a page of separately committed rows can take.
    pysqlite opens no transaction for a SELECT, so SQLite keeps the engine as it is (switching its
    isolation level would cost a PRAGMA per connection checkout instead).
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Foreign keys are off by default in SQLite; WAL lets readers continue while a record is written."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
