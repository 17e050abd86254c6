"""What every crud module shares: its errors, the insert of a uniquely named row, and shared table aliases."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause

from ..models import Base

RowT = TypeVar("RowT")


class NotFound(LookupError):
    """A named SAE, feature, user or list that is not in the store."""


class Conflict(ValueError):
    """A write that would duplicate something unique (an SAE or user name, a list name)."""


def add_unique(session: Session, row: RowT, conflict: str) -> RowT:
    """Insert and commit a row whose name must be unique; a duplicate is a Conflict saying `conflict`."""
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict) from None
    return row


def shared_alias(model: type[Base], name: str) -> NamedFromClause:
    """An alias of `model`'s table that every statement of every request may use (SQL constructs are immutable).

    Its columns are set up here, once, and so never by two threads at once. Made afresh for each page, the list's
    four aliases cost 2.8 ms of CPU of a 17 ms search at a million features: a proxy object for every column."""
    table = model.__table__
    assert isinstance(table, Table)
    alias = table.alias(name)
    alias.c  # noqa: B018  (builds the column collection now)
    return alias
