"""Tags on features: free names, created on first use, shared by every SAE."""

from __future__ import annotations

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.orm import Session

from ..models import FeatureTag, Tag


def named(tag: str) -> ColumnElement[bool]:
    """Match a tag by name ignoring case, so "Python" and "python" are one tag (the first spelling is kept).

    Both sides go through the database's lower() so SQLite and PostgreSQL agree with each other; the
    unique index on the exact name stays, and reusing the match keeps a second spelling from being stored.
    """
    return func.lower(Tag.name) == func.lower(tag.strip())


def tag_row(session: Session, tag: str) -> Tag:
    """The tag of this name, matched ignoring case, or a new one (flushed, so it has an id)."""
    name = tag.strip()
    if not name:
        raise ValueError("a tag cannot be empty")
    row = session.scalar(select(Tag).where(named(name)).order_by(Tag.id).limit(1)) or Tag(name=name)
    session.add(row)
    session.flush()
    return row


def tag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str, author_id: int | None = None) -> None:
    """Put a tag (created on first use) on a feature; tagging twice is a no-op."""
    row = tag_row(session, tag)
    if session.get(FeatureTag, (sae_id, feature_index, row.id)) is None:
        session.add(FeatureTag(sae_id=sae_id, feature_index=feature_index, tag_id=row.id, author_id=author_id))
    session.commit()


def untag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str) -> None:
    """Take a tag off a feature, whatever the case it is spelled in; an absent tag is a no-op."""
    link = session.scalar(select(FeatureTag).join(Tag).where(
        FeatureTag.sae_id == sae_id, FeatureTag.feature_index == feature_index, named(tag)).limit(1))
    if link is not None:
        session.delete(link)
        session.commit()


_FEATURE_TAGS = select(Tag.name).join(FeatureTag).where(
    FeatureTag.sae_id == bindparam("sae_id"), FeatureTag.feature_index == bindparam("index")).order_by(Tag.name)


def feature_tags(session: Session, *, sae_id: int, feature_index: int) -> list[str]:
    return list(session.connection().execute(_FEATURE_TAGS, {"sae_id": sae_id, "index": feature_index}).scalars())


def tagged_count(session: Session, *, sae_id: int, tag: str) -> int:
    """How many features of an SAE carry the tag (a count over its tag rows, through their index on tag_id)."""
    return session.scalar(select(func.count(FeatureTag.feature_index.distinct())).join(Tag)
                          .where(FeatureTag.sae_id == sae_id, named(tag))) or 0


def list_tags(session: Session) -> list[str]:
    return list(session.scalars(select(Tag.name).order_by(Tag.name)))
