"""What every crud module shares: its errors and the insert of a uniquely named row."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
