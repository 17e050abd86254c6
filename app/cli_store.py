"""How the store's commands open the store: the --db option and a session on the store it names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.orm import Session

from .db import session_factory
from .migrate import open_store
from .settings import Settings

DB_OPTION = typer.Option(None, "--db", help="Database URL (default: DATABASE_URL or sqlite:///saescope.db).")


def database_url(db: str | None) -> str:
    """--db wins over DATABASE_URL, which wins over the SQLite default."""
    return Settings.on_store(db).database_url


@contextmanager
def open_session(db: str | None, migrate: bool = False) -> Iterator[Session]:
    """A session on the store; `migrate` first brings its schema up to date (commands that write).

    StoreError, before the command's work, when the store cannot be opened (see migrate.open_store).
    """
    engine = open_store(database_url(db), migrate=migrate)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()
