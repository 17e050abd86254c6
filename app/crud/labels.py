"""Feature labels: an append-only history per feature, whose newest row is the current label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    SQLColumnExpression,
    Subquery,
    and_,
    bindparam,
    exists,
    func,
    select,
)
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.selectable import NamedFromClause

from ..models import Explanation, Feature, Label, User
from .base import NotFound, shared_alias
from .saes import find_sae


class LabelConflict(Exception):
    """Someone else changed a feature's label since the editor loaded it; carries the label now current."""

    def __init__(self, current: Label | None):
        super().__init__("the label changed while you were editing it")
        self.current = current


# The current label is a feature's newest: every query for it goes through newest_label_ids, and every history
# through _history, newest first, so the first row of each feature in a history is its current label.


def newest_label_ids(sae_id: int | BindParameter[Any], indices: list[int] | BindParameter[Any] | None = None
                     ) -> Select[Any]:
    """The id of each labelled feature's current label, over an SAE or only its features in `indices`."""
    stmt = select(func.max(Label.id).label("id")).where(Label.sae_id == sae_id)
    if indices is not None:
        stmt = stmt.where(Label.feature_index.in_(indices))
    return stmt.group_by(Label.feature_index)


NEWER = shared_alias(Label, "newer")
"""A newer label of the same feature, in `current_label`'s test (an alias may serve any number of statements)."""


def current_label(label: NamedFromClause, sae_id: int, feature_index: SQLColumnExpression[int]) -> ColumnElement[bool]:
    """Join condition: `label` (an alias of labels) is the current label of the feature `feature_index` names,
    the one with no newer label beside it. Both halves read ix_labels_feature, a lookup per feature joined,
    and the label sort reads the labels in its order through ix_labels_sort under the same condition."""
    return and_(label.c.sae_id == sae_id, label.c.feature_index == feature_index,
                ~exists().where(NEWER.c.sae_id == sae_id, NEWER.c.feature_index == label.c.feature_index,
                                NEWER.c.id > label.c.id))


def current_label_texts(sae_id: int) -> Subquery:
    """Subquery: (feature_index, text, source) of the current label of each labelled feature of an SAE."""
    newest = newest_label_ids(sae_id).subquery()
    return select(Label.feature_index, Label.text, Label.source).join(newest, Label.id == newest.c.id).subquery()


def _history(*columns: Any) -> Select[Any]:
    return (select(*columns)
            .where(Label.sae_id == bindparam("sae_id"), Label.feature_index.in_(bindparam("indices", expanding=True)))
            .order_by(Label.id.desc()))


_LABEL_ROWS = _history(Label.id, Label.feature_index, Label.text, Label.source, Label.created_at,
                       User.name.label("author_name"),
                       exists().where(Explanation.label_id == Label.id).label("from_draft")
                       ).outerjoin(User, Label.author_id == User.id)
"""Plain rows that read like Label objects (author_name included): the ORM cost more than the query.
`from_draft`: whether the label was made by reviewing a draft explanation, whose page shows that draft."""

_LABEL_HISTORY = _history(Label).options(joinedload(Label.author))

_LABEL_TEXTS = select(Label.feature_index, Label.text).where(
    Label.id.in_(newest_label_ids(bindparam("sae_id"), bindparam("indices", expanding=True))))


def label_rows(session: Session, *, sae_id: int, indices: list[int]) -> Sequence[Row[Any]]:
    """The label histories of several features together, newest first, as plain rows (one statement)."""
    return session.connection().execute(_LABEL_ROWS, {"sae_id": sae_id, "indices": indices}).all()


def label_history(session: Session, *, sae_id: int, feature_index: int) -> list[Label]:
    """Every label a feature has had, newest first, authors loaded."""
    return list(session.scalars(_LABEL_HISTORY, {"sae_id": sae_id, "indices": [feature_index]}))


def current_labels(session: Session, *, sae_id: int) -> dict[int, Label]:
    """The current label of every labelled feature of an SAE."""
    rows = session.scalars(select(Label).where(Label.id.in_(newest_label_ids(sae_id))))
    return {label.feature_index: label for label in rows}


def label_texts(session: Session, *, sae_id: int, indices: list[int]) -> dict[int, str]:
    """The current label text of those of `indices` that are labelled (for links to neighbours)."""
    rows = session.connection().execute(_LABEL_TEXTS, {"sae_id": sae_id, "indices": indices})
    return dict(rows.all())


def add_label(session: Session, *, sae_id: int, feature_index: int, text: str,
              author_id: int | None = None, source: str = "human") -> Label:
    """Append a new current label; earlier ones stay in the history."""
    label = Label(sae_id=sae_id, feature_index=feature_index, text=_label_text(text), author_id=author_id,
                  source=source)
    session.add(label)
    session.commit()
    return label


def revise_label(session: Session, *, sae_id: int, feature_index: int, text: str, base_id: int | None,
                 author_id: int | None = None, source: str = "human", commit: bool = True) -> Label:
    """Append a label only if the current one is still `base_id` (None: unlabelled), else LabelConflict;
    the current text unchanged appends nothing.

    The feature row is locked first (FOR UPDATE on PostgreSQL; SQLite takes its single write lock at the
    insert), and the check runs after the insert inside the same transaction, so of two concurrent edits
    from the same base exactly one wins. Without `commit` the caller commits, with its own writes beside it.
    """
    text = _label_text(text)
    locked = session.scalar(select(Feature.id).where(Feature.sae_id == sae_id, Feature.feature_index == feature_index)
                            .with_for_update())
    if locked is None:
        raise NotFound(f"SAE {sae_id} has no recorded feature {feature_index}")
    label = Label(sae_id=sae_id, feature_index=feature_index, text=text, author_id=author_id, source=source)
    session.add(label)
    session.flush()
    if session.scalar(newest_label_ids(sae_id, [feature_index]).where(Label.id < label.id)) != base_id:
        session.rollback()
        history = label_history(session, sae_id=sae_id, feature_index=feature_index)
        raise LabelConflict(history[0] if history else None)
    if base_id is not None and session.scalar(select(Label.text).where(Label.id == base_id)) == text:
        session.rollback()  # the current text saved again: a history entry would record no change
        return session.get_one(Label, base_id)
    if commit:
        session.commit()
    return label


def _label_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("a label cannot be empty")
    return text


def labelled_count(session: Session, *, sae_id: int, sources: tuple[str, ...] | None = None) -> int:
    """How many features of an SAE have a label, or given `sources`, a current label from one of them.

    Read from the labels alone, a cost in labels, not features: the labelled features are a walk down
    ix_labels_feature (grouped in its order, so nothing is sorted), the current labels' sources one lookup each."""
    if sources is None:
        labelled = select(Label.feature_index).where(Label.sae_id == sae_id).group_by(Label.feature_index)
        return session.scalar(select(func.count()).select_from(labelled.subquery())) or 0
    return session.scalar(select(func.count()).where(Label.id.in_(newest_label_ids(sae_id)),
                                                     Label.source.in_(sources))) or 0


def next_unlabelled(session: Session, *, sae_id: int, after: int = -1) -> int | None:
    """The first live unlabelled feature after index `after`, wrapping round; None when all are labelled."""
    labelled = exists().where(Label.sae_id == sae_id, Label.feature_index == Feature.feature_index)
    base = select(Feature.feature_index).where(Feature.sae_id == sae_id, ~Feature.is_dead, ~labelled)
    found = session.scalar(base.where(Feature.feature_index > after).order_by(Feature.feature_index).limit(1))
    if found is None:
        found = session.scalar(base.order_by(Feature.feature_index).limit(1))
    return found


def import_labels(session: Session, *, sae_id: int, labels: list[tuple[int, str]], author_id: int | None) -> int:
    """Append imported (index, text) labels that differ from the current ones; returns how many were added."""
    sae = find_sae(session, ref=sae_id)
    outside = [i for i, _ in labels if not 0 <= i < sae.d_sae]
    if outside:
        raise ValueError(f"feature {outside[0]} is outside SAE {sae.name!r} (0..{sae.d_sae - 1})")
    current = {i: label.text for i, label in current_labels(session, sae_id=sae_id).items()}
    added = 0
    for index, text in labels:
        if current.get(index) != text:
            session.add(Label(sae_id=sae_id, feature_index=index, text=text, author_id=author_id, source="import"))
            current[index] = text
            added += 1
    session.commit()
    return added


def all_labels(session: Session, *, sae_id: int, current_only: bool = False) -> list[Label]:
    """The whole label history of an SAE (or with `current_only` each feature's current label), by feature and
    oldest first, authors loaded."""
    stmt = select(Label).options(joinedload(Label.author)).where(Label.sae_id == sae_id)
    if current_only:
        stmt = stmt.where(Label.id.in_(newest_label_ids(sae_id)))
    return list(session.scalars(stmt.order_by(Label.feature_index, Label.id)))
