"""What a feature is, in a line: wherever a page shows a feature by number, it shows this beside it.

One statement, built once, for any number of features of one SAE: their rows with their current labels and
the window of their strongest example (for the hover preview).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import BindParameter, and_, bindparam, select
from sqlalchemy.orm import Session

from ..models import Context, Example, Feature, Label
from .labels import newest_label_ids


@dataclass(frozen=True)
class FeatureBrief:
    """One feature's label (or, failing that, its top tokens) and the text of its strongest example."""

    index: int
    label: str | None
    top_text: str
    is_dead: bool
    is_dense: bool
    max_act: float
    example: tuple[str, str, str] | None
    """The strongest example's window as (text before, the peak token, text after); None if it never fired."""


_SAE: BindParameter[int] = bindparam("sae_id")
_INDICES: BindParameter[list[int]] = bindparam("indices", expanding=True)
_NEWEST = newest_label_ids(_SAE, _INDICES).subquery()
_LABELS = select(Label.feature_index, Label.text).join(_NEWEST, Label.id == _NEWEST.c.id).subquery()
_BRIEFS = (
    select(Feature.feature_index, _LABELS.c.text, Feature.top_text, Feature.is_dead, Feature.is_dense,
           Feature.max_act, Example.peak, Context.pieces)
    .outerjoin(_LABELS, _LABELS.c.feature_index == Feature.feature_index)
    .outerjoin(Example, and_(Example.feature_id == Feature.id, Example.interval.is_(None), Example.rank == 0))
    .outerjoin(Context, Example.context_id == Context.id)
    .where(Feature.sae_id == _SAE, Feature.feature_index.in_(_INDICES))
)
"""Each feature with its current label and its strongest example (rank 0 of the top examples), if any."""


def feature_briefs(session: Session, *, sae_id: int, indices: Iterable[int]) -> dict[int, FeatureBrief]:
    """The brief of each of `indices` that the SAE's recording holds (others are left out)."""
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    rows = session.connection().execute(_BRIEFS, {"sae_id": sae_id, "indices": wanted})
    return {row.feature_index: FeatureBrief(row.feature_index, row.text, row.top_text, row.is_dead, row.is_dense,
                                            row.max_act, None if row.pieces is None else _split(row.pieces, row.peak))
            for row in rows}


def briefs_of_pairs(session: Session, *, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], FeatureBrief]:
    """The brief of each (sae_id, feature_index) pair, for pages that list features of several SAEs."""
    by_sae: dict[int, set[int]] = {}
    for sae_id, index in pairs:
        by_sae.setdefault(sae_id, set()).add(index)
    return {(sae_id, index): brief for sae_id, indices in by_sae.items()
            for index, brief in feature_briefs(session, sae_id=sae_id, indices=indices).items()}


def _split(pieces: list[str], peak: int) -> tuple[str, str, str]:
    return "".join(pieces[:peak]), "".join(pieces[peak:peak + 1]), "".join(pieces[peak + 1:])


def dense_features(session: Session, *, sae_id: int) -> list[int]:
    """The indices of the features the recording found dense."""
    return list(session.scalars(select(Feature.feature_index).where(Feature.sae_id == sae_id, Feature.is_dense)))
