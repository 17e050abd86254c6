"""Tags on features: free names, created on first use, shared by every SAE."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..models import FeatureTag, Tag


def tag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str, author_id: int | None = None) -> None:
    """Put a tag (created on first use) on a feature; tagging twice is a no-op."""
    name = tag.strip()
    if not name:
        raise ValueError("a tag cannot be empty")
    row = session.scalar(select(Tag).where(Tag.name == name)) or Tag(name=name)
    session.add(row)
    session.flush()
    if session.get(FeatureTag, (sae_id, feature_index, row.id)) is None:
        session.add(FeatureTag(sae_id=sae_id, feature_index=feature_index, tag_id=row.id, author_id=author_id))
    session.commit()


def untag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str) -> None:
    link = session.scalar(select(FeatureTag).join(Tag).where(
        FeatureTag.sae_id == sae_id, FeatureTag.feature_index == feature_index, Tag.name == tag))
    if link is not None:
        session.delete(link)
        session.commit()


_FEATURE_TAGS = select(Tag.name).join(FeatureTag).where(
    FeatureTag.sae_id == bindparam("sae_id"), FeatureTag.feature_index == bindparam("index")).order_by(Tag.name)


def feature_tags(session: Session, *, sae_id: int, feature_index: int) -> list[str]:
    return list(session.connection().execute(_FEATURE_TAGS, {"sae_id": sae_id, "index": feature_index}).scalars())


def list_tags(session: Session) -> list[str]:
    return list(session.scalars(select(Tag.name).order_by(Tag.name)))
