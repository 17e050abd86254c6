"""Attribution: the SAEs of a set, saved graphs behind permalinks, the labels and top tokens graphs show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AttributionGraphRow, Feature, Sae, SaeSet
from .base import NotFound
from .labels import label_texts
from .sae_sets import find_sae_set, set_members


def set_saes(session: Session, *, ref: str | int) -> tuple[SaeSet, list[Sae]]:
    """A set (by id or name) and its SAEs in forward order; NotFound for an unknown or empty set."""
    sae_set = find_sae_set(session, ref=ref)
    members = set_members(session, sae_set=sae_set)
    if not members:
        raise NotFound(f"the set {sae_set.name!r} holds no SAEs yet")
    return sae_set, members


def save_graph(session: Session, *, set_id: int, sae_ids: list[int], graph: dict[str, Any],
               owner_id: int | None, adjacency: bytes | None = None) -> AttributionGraphRow:
    """Store a finished graph (with a replacement graph's adjacency) in one commit (a failed run stores nothing)."""
    row = AttributionGraphRow(set_id=set_id, sae_ids=sae_ids, prompt=graph["prompt"], target=graph["target"],
                              method=graph["method"], graph=graph, owner_id=owner_id, adjacency=adjacency)
    session.add(row)
    session.commit()
    return row


def find_graph(session: Session, *, graph_id: int, set_id: int | None = None) -> AttributionGraphRow:
    """A saved graph, of the given set when one is named."""
    row = session.get(AttributionGraphRow, graph_id)
    if row is None or (set_id is not None and row.set_id != set_id):
        raise NotFound(f"no saved attribution graph {graph_id}")
    return row


def list_graphs(session: Session, *, set_id: int, limit: int = 20) -> list[AttributionGraphRow]:
    """The set's saved graphs, newest first."""
    stmt = select(AttributionGraphRow).where(AttributionGraphRow.set_id == set_id)
    return list(session.scalars(stmt.order_by(AttributionGraphRow.id.desc()).limit(limit)))


def feature_blurbs(session: Session, *, sae_id: int, indices: list[int]) -> dict[int, dict[str, str]]:
    """Per feature index: its current label and its top tokens, where the store has them."""
    labels = label_texts(session, sae_id=sae_id, indices=indices)
    rows = session.execute(select(Feature.feature_index, Feature.top_text)
                           .where(Feature.sae_id == sae_id, Feature.feature_index.in_(indices))).all()
    tops = dict(rows)
    return {i: {"label": labels.get(i, ""), "top": tops.get(i, "")} for i in indices if i in labels or i in tops}
