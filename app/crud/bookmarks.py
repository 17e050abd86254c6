"""Each user's bookmark lists of features, with a note per bookmark."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Bookmark, BookmarkList
from .base import NotFound, add_unique


def create_bookmark_list(session: Session, *, owner_id: int, name: str, description: str = "") -> BookmarkList:
    return add_unique(session, BookmarkList(owner_id=owner_id, name=name, description=description),
                      f"you already have a list named {name!r}")


def find_bookmark_list(session: Session, *, list_id: int, owner_id: int) -> BookmarkList:
    """One of the owner's lists; another user's list is as missing as a list that does not exist."""
    lst = session.get(BookmarkList, list_id)
    if lst is None or lst.owner_id != owner_id:
        raise NotFound(f"you have no bookmark list {list_id}")
    return lst


def add_bookmark(session: Session, *, list_id: int, sae_id: int, feature_index: int, note: str = "") -> None:
    """Bookmark a feature in a list; bookmarking again updates the note."""
    mark = session.get(Bookmark, (list_id, sae_id, feature_index))
    if mark is None:
        session.add(Bookmark(list_id=list_id, sae_id=sae_id, feature_index=feature_index, note=note))
    else:
        mark.note = note
    session.commit()


def remove_bookmark(session: Session, *, list_id: int, sae_id: int, feature_index: int) -> None:
    mark = session.get(Bookmark, (list_id, sae_id, feature_index))
    if mark is not None:
        session.delete(mark)
        session.commit()


def bookmark_lists(session: Session, *, owner_id: int) -> list[BookmarkList]:
    mine = select(BookmarkList).where(BookmarkList.owner_id == owner_id)
    return list(session.scalars(mine.order_by(BookmarkList.name)))
