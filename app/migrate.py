"""Run Alembic programmatically, so `saescope db upgrade` and tests need no alembic.ini lookup; and open the
store for a command or a server, every way it can fail turned into one StoreError line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from .db import make_engine, shown_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class StoreError(RuntimeError):
    """The store cannot be used: not a database, unreachable, a schema this code does not know, a bad URL.

    The message is one line that names the URL without its password, for a command's error or a server's
    refusal to start.
    """


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating the schema on an empty database)."""
    command.upgrade(alembic_config(url), revision)


def known_revisions() -> set[str]:
    """Every schema revision this code's migrations define."""
    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def check_schema(engine: Engine) -> None:
    """Refuse a store whose schema revision this code does not know: a newer saescope migrated it.

    Its tables may have columns or meanings this code would silently get wrong, so nothing reads or
    writes it; an empty database or an older schema passes (commands that write migrate it first).
    """
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    unknown = sorted(current - known_revisions())
    if unknown:
        heads = ", ".join(ScriptDirectory(str(MIGRATIONS)).get_heads())
        raise StoreError(f"the store at {shown_url(engine.url)} has schema revision {', '.join(unknown)}, which this "
                         f"saescope does not know (its newest is {heads}): it was made by a newer saescope")


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn the ways opening or migrating the store fails into one StoreError line naming the URL (no password)."""
    try:
        yield
    except StoreError:
        raise
    except ArgumentError as err:
        raise StoreError(f"cannot read the database URL {shown_url(url)}: {_first_line(err)}") from err
    except DBAPIError as err:
        raise StoreError(f"cannot open the store at {shown_url(url)}: {_first_line(err.orig or err)}") from err
    except (SQLAlchemyError, CommandError) as err:
        raise StoreError(f"cannot open the store at {shown_url(url)}: {_first_line(err)}") from err


def open_store(url: str, migrate: bool = False) -> Engine:
    """An engine on a store that answers and has a schema this code knows; `migrate` brings it to the newest.

    Connecting first surfaces a file that is not a database, an unreachable server or a newer schema here,
    before a command does any work or a server starts its workers; the caller disposes of the engine.
    """
    with store_errors(url):
        engine = make_engine(url)
        try:
            check_schema(engine)
            if migrate:
                upgrade(url)
        except BaseException:
            engine.dispose()
            raise
    return engine


def _first_line(err: BaseException) -> str:
    """An error's first line (DB-API messages add hints and SQL on later lines)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
