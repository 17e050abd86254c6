"""Attribution: the SAEs of a set, saved graphs behind permalinks, the labels and top tokens graphs show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AttributionGraphRow, Feature, Sae
from .base import NotFound
from .labels import label_texts


def set_saes(session: Session, *, key: str) -> list[Sae]:
    """The SAEs a set key names (store ids joined by commas), each found, all of one model."""
    try:
        ids = [int(part) for part in key.split(",") if part.strip()]
    except ValueError:
        raise NotFound(f"no SAE set {key!r}: name one as SAE ids joined by commas, e.g. 1,2,3") from None
    if not ids:
        raise NotFound("no SAE set named: give SAE ids joined by commas, e.g. 1,2,3")
    saes = [session.get(Sae, i) for i in ids]
    missing = [i for i, sae in zip(ids, saes, strict=True) if sae is None]
    if missing:
        raise NotFound(f"no SAE {missing[0]} in the store")
    return [sae for sae in saes if sae is not None]


def save_graph(session: Session, *, set_key: str, sae_ids: list[int], graph: dict[str, Any],
               owner_id: int | None) -> AttributionGraphRow:
    """Store a finished graph in one commit (a failed run stores nothing)."""
    row = AttributionGraphRow(set_key=set_key, sae_ids=sae_ids, prompt=graph["prompt"], target=graph["target"],
                              method=graph["method"], graph=graph, owner_id=owner_id)
    session.add(row)
    session.commit()
    return row


def find_graph(session: Session, *, graph_id: int) -> AttributionGraphRow:
    row = session.get(AttributionGraphRow, graph_id)
    if row is None:
        raise NotFound(f"no saved attribution graph {graph_id}")
    return row


def list_graphs(session: Session, *, set_key: str, limit: int = 20) -> list[AttributionGraphRow]:
    """The set's saved graphs, newest first."""
    stmt = select(AttributionGraphRow).where(AttributionGraphRow.set_key == set_key)
    return list(session.scalars(stmt.order_by(AttributionGraphRow.id.desc()).limit(limit)))


def feature_blurbs(session: Session, *, sae_id: int, indices: list[int]) -> dict[int, dict[str, str]]:
    """Per feature index: its current label and its top tokens, where the store has them."""
    labels = label_texts(session, sae_id=sae_id, indices=indices)
    rows = session.execute(select(Feature.feature_index, Feature.top_text)
                           .where(Feature.sae_id == sae_id, Feature.feature_index.in_(indices))).all()
    tops = dict(rows)
    return {i: {"label": labels.get(i, ""), "top": tops.get(i, "")} for i in indices if i in labels or i in tops}
