"""Draft explanations (issue 17): storing an explainer's drafts, and a researcher accepting, editing or
rejecting them. A draft never becomes a label by itself, and no label is ever written over: accepting or editing
appends one to the feature's label history, and the draft keeps its id (label_id) as the link back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Subquery, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from ..models import Explanation, Label, now
from .base import Conflict, NotFound
from .labels import label_history, revise_label

DRAFT, ACCEPTED, EDITED, REJECTED = "draft", "accepted", "edited", "rejected"


def add_explanation(session: Session, *, sae_id: int, feature_index: int, text: str, explainer_model: str,
                    scorer_model: str, prompt_version: str, scores: dict[str, Any]) -> Explanation | None:
    """Store one scored draft and commit it (the explain job commits feature by feature, so it can resume).
    None when the feature already has one: another job stored it first (a feature is explained once)."""
    detection = scores.get("detection")
    row = Explanation(sae_id=sae_id, feature_index=feature_index, text=text, explainer_model=explainer_model,
                      scorer_model=scorer_model, prompt_version=prompt_version, scores=scores,
                      score=detection["accuracy"] if detection else None, status=DRAFT)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return row


def newest_explanations(sae_id: int) -> Subquery:
    """Subquery: (feature_index, text, status, score) of each explained feature's newest explanation."""
    newest = (select(func.max(Explanation.id).label("id")).where(Explanation.sae_id == sae_id)
              .group_by(Explanation.feature_index).subquery())
    return (select(Explanation.feature_index, Explanation.text, Explanation.status, Explanation.score)
            .join(newest, Explanation.id == newest.c.id).subquery())


def explained_indices(session: Session, *, sae_id: int) -> set[int]:
    """Features that have an explanation in any state: the explain job does not explain them again."""
    return set(session.scalars(select(Explanation.feature_index).where(Explanation.sae_id == sae_id).distinct()))


def draft_count(session: Session, *, sae_id: int) -> int:
    """Features with an unverified draft waiting for review."""
    return session.scalar(select(func.count(Explanation.feature_index.distinct()))
                          .where(Explanation.sae_id == sae_id, Explanation.status == DRAFT)) or 0


def _drafts(sae_id: int) -> Select[Any]:
    return select(Explanation).where(Explanation.sae_id == sae_id, Explanation.status == DRAFT)


def current_draft(session: Session, *, sae_id: int, feature_index: int) -> Explanation | None:
    """The newest unverified draft of a feature."""
    return session.scalar(_drafts(sae_id).where(Explanation.feature_index == feature_index)
                          .order_by(Explanation.id.desc()).limit(1))


def find_explanation(session: Session, *, sae_id: int, feature_index: int, explanation_id: int) -> Explanation:
    row = session.get(Explanation, explanation_id)
    if row is None or row.sae_id != sae_id or row.feature_index != feature_index:
        raise NotFound(f"feature {feature_index} has no draft {explanation_id}")
    return row


def _reviewable(row: Explanation) -> None:
    if row.status != DRAFT:
        raise Conflict(f"this draft was already {row.status}")


def accept_draft(session: Session, *, draft: Explanation, reviewer_id: int, base_label_id: int | None) -> Label:
    """Make the draft the feature's label (source auto, the reviewer as author) unless the feature has a human
    label (Conflict: a draft never replaces one) or its label changed since the page loaded (LabelConflict)."""
    _reviewable(draft)
    history = label_history(session, sae_id=draft.sae_id, feature_index=draft.feature_index)
    if history and history[0].source != "auto":
        raise Conflict("this feature has a label written by a person; a draft does not replace it (edit instead)")
    label = revise_label(session, sae_id=draft.sae_id, feature_index=draft.feature_index, text=draft.text,
                         base_id=base_label_id, author_id=reviewer_id, source="auto", commit=False)
    return _review(session, draft, ACCEPTED, reviewer_id, label)


def edit_draft(session: Session, *, draft: Explanation, reviewer_id: int, text: str, base_label_id: int | None
               ) -> Label:
    """Append the reviewer's text as a human label that records the draft it started from."""
    _reviewable(draft)
    label = revise_label(session, sae_id=draft.sae_id, feature_index=draft.feature_index, text=text,
                         base_id=base_label_id, author_id=reviewer_id, commit=False)
    return _review(session, draft, EDITED, reviewer_id, label)


def reject_draft(session: Session, *, draft: Explanation, reviewer_id: int) -> None:
    """Set the draft aside; it stays stored (and the job will not draft the feature again)."""
    _reviewable(draft)
    draft.status, draft.reviewer_id, draft.reviewed_at = REJECTED, reviewer_id, now()
    session.commit()


def _review(session: Session, draft: Explanation, status: str, reviewer_id: int, label: Label) -> Label:
    draft.status, draft.reviewer_id, draft.reviewed_at, draft.label_id = status, reviewer_id, now(), label.id
    session.commit()
    return label


def drafts_of_labels(session: Session, *, label_ids: Iterable[int]) -> dict[int, Explanation]:
    """The draft each of these labels started from, by label id (labels made by accepting or editing one)."""
    ids = list(label_ids)
    if not ids:
        return {}
    rows = session.scalars(select(Explanation).options(joinedload(Explanation.reviewer))
                           .where(Explanation.label_id.in_(ids)))
    return {row.label_id: row for row in rows if row.label_id is not None}


def review_order(session: Session, *, sae_id: int) -> list[int]:
    """Features with an unverified draft, lowest score first (unscored last), then by index."""
    stmt = (select(Explanation.feature_index, func.min(func.coalesce(Explanation.score, 2.0)).label("score"))
            .where(Explanation.sae_id == sae_id, Explanation.status == DRAFT)
            .group_by(Explanation.feature_index))
    return [index for index, _ in session.execute(stmt.order_by("score", Explanation.feature_index))]


def next_draft(session: Session, *, sae_id: int, after: int | None = None) -> int | None:
    """The feature whose draft comes next in review order after feature `after` (the first when None or when
    `after` has no draft left); None when no draft waits."""
    order = review_order(session, sae_id=sae_id)
    if after in order:
        order = order[order.index(after) + 1:] + order[:order.index(after)]
    return order[0] if order else None


@dataclass(frozen=True)
class SaeExplanations:
    """An SAE's explanations, read once for an export."""

    by_label: dict[int, Explanation]
    """The draft each label was accepted or edited from, by label id."""
    pending: dict[int, Explanation]
    """Each feature's newest unverified draft, by feature index."""


def sae_explanations(session: Session, *, sae_id: int) -> SaeExplanations:
    rows = session.scalars(select(Explanation).where(Explanation.sae_id == sae_id).order_by(Explanation.id))
    by_label: dict[int, Explanation] = {}
    pending: dict[int, Explanation] = {}
    for row in rows:
        if row.label_id is not None:
            by_label[row.label_id] = row
        if row.status == DRAFT:
            pending[row.feature_index] = row
    return SaeExplanations(by_label, pending)
