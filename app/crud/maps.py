"""The feature map in the store: what a map is made from, its points and clusters, cluster labels, co-activation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, joinedload

from ..models import (
    Bookmark,
    ClusterLabel,
    Coactivation,
    Context,
    Example,
    Feature,
    FeatureMapRun,
    FeatureTag,
    Label,
    MapCluster,
    MapPoint,
)
from ..packing import IDS
from .base import NotFound
from .features import token_texts
from .labels import current_label_texts
from .saes import find_sae
from .tags import tag_row

TOP_TOKENS = 5
"""Top tokens shown per point on the map (the hover card)."""


def dead_mask(session: Session, *, sae_id: int) -> np.ndarray:
    """True for each dead feature of a recorded SAE, indexed by feature (the recording decides who is dead)."""
    rows = session.execute(select(Feature.feature_index, Feature.is_dead).where(Feature.sae_id == sae_id)).all()
    dead = np.zeros(len(rows), dtype=bool)
    for index, is_dead in rows:
        dead[index] = is_dead
    return dead


def top_tokens(session: Session, *, sae_id: int) -> dict[int, list[str]]:
    """Each feature's top examples' peak tokens, strongest first, as text (stripped; blank ones dropped)."""
    texts = token_texts(session, sae_id=sae_id)
    stmt = (select(Feature.feature_index, Example.peak, Context.token_ids)
            .join(Example, Example.feature_id == Feature.id).join(Context, Example.context_id == Context.id)
            .where(Feature.sae_id == sae_id, Example.interval.is_(None))
            .order_by(Feature.feature_index, Example.rank))
    out: dict[int, list[str]] = {}
    for index, peak, blob in session.execute(stmt):
        ids = np.frombuffer(blob, dtype=IDS)
        text = texts.get(int(ids[peak]), "").strip() if peak < len(ids) else ""
        if text:
            out.setdefault(index, []).append(text)
    return out


def find_map(session: Session, *, sae_id: int) -> FeatureMapRun:
    """The SAE's current map; NotFound naming the command that makes one."""
    run = session.get(FeatureMapRun, sae_id)
    if run is None:
        sae = find_sae(session, ref=sae_id)
        raise NotFound(f"SAE {sae.name!r} has no feature map yet: saescope map --sae {sae.id} makes one")
    return run


@dataclass(frozen=True)
class MapPointRow:
    """One feature on the map, as the page and the API give it."""

    feature_index: int
    x: float
    y: float
    cluster: int | None
    density: float
    label: str | None
    top_tokens: list[str]


def map_points(session: Session, *, sae_id: int) -> list[MapPointRow]:
    """Every live feature's point with what a hover shows (dead features have no position and are left out)."""
    label = current_label_texts(sae_id)
    stmt = (select(MapPoint.feature_index, MapPoint.x, MapPoint.y, MapPoint.cluster, Feature.density, label.c.text,
                   Feature.top_text)
            .join(Feature, (Feature.sae_id == MapPoint.sae_id) & (Feature.feature_index == MapPoint.feature_index))
            .outerjoin(label, label.c.feature_index == MapPoint.feature_index)
            .where(MapPoint.sae_id == sae_id, MapPoint.x.is_not(None))
            .order_by(MapPoint.feature_index))
    return [MapPointRow(i, x, y, c, d, text, top.split(" ")[:TOP_TOKENS] if top else [])
            for i, x, y, c, d, text, top in session.execute(stmt)]


def map_clusters(session: Session, *, sae_id: int) -> list[MapCluster]:
    """The clusters of the SAE's current map, largest first."""
    return list(session.scalars(select(MapCluster).where(MapCluster.sae_id == sae_id).order_by(MapCluster.cluster)))


def find_cluster(session: Session, *, sae_id: int, cluster: int) -> MapCluster:
    row = session.get(MapCluster, (sae_id, cluster))
    if row is None:
        run = find_map(session, sae_id=sae_id)  # NotFound itself when there is no map
        raise NotFound(f"the map of SAE {sae_id} has no cluster {cluster} (it has {run.n_clusters})")
    return row


@dataclass(frozen=True)
class MemberRow:
    """A member of a cluster with what its row on the cluster page shows."""

    feature_index: int
    density: float
    max_act: float
    label: str | None
    top_text: str


def cluster_members(session: Session, *, sae_id: int, cluster: int) -> list[MemberRow]:
    """A cluster's features by index, with their density, labels and top tokens."""
    label = current_label_texts(sae_id)
    stmt = (select(Feature.feature_index, Feature.density, Feature.max_act, label.c.text, Feature.top_text)
            .join(MapPoint, (MapPoint.sae_id == Feature.sae_id) & (MapPoint.feature_index == Feature.feature_index))
            .outerjoin(label, label.c.feature_index == Feature.feature_index)
            .where(Feature.sae_id == sae_id, MapPoint.cluster == cluster)
            .order_by(Feature.feature_index))
    return [MemberRow(*row) for row in session.execute(stmt)]


def cluster_label_history(session: Session, *, sae_id: int, cluster: int) -> list[ClusterLabel]:
    """Every label the cluster has had under the current map's membership, newest first, authors loaded."""
    run = find_map(session, sae_id=sae_id)
    return list(session.scalars(
        select(ClusterLabel).options(joinedload(ClusterLabel.author))
        .where(ClusterLabel.sae_id == sae_id, ClusterLabel.membership == run.membership, ClusterLabel.cluster == cluster)
        .order_by(ClusterLabel.id.desc())))


def cluster_label_texts(session: Session, *, sae_id: int) -> dict[int, str]:
    """The current label of each labelled cluster of the current map."""
    run = session.get(FeatureMapRun, sae_id)
    if run is None:
        return {}
    newest = (select(func.max(ClusterLabel.id)).where(ClusterLabel.sae_id == sae_id,
                                                      ClusterLabel.membership == run.membership)
              .group_by(ClusterLabel.cluster))
    return dict(session.execute(select(ClusterLabel.cluster, ClusterLabel.text).where(ClusterLabel.id.in_(newest))).all())


def add_cluster_label(session: Session, *, sae_id: int, cluster: int, text: str, author_id: int | None) -> ClusterLabel:
    """Append a label to a cluster of the current map; earlier ones stay in its history."""
    text = text.strip()
    if not text:
        raise ValueError("a cluster label cannot be empty")
    find_cluster(session, sae_id=sae_id, cluster=cluster)
    run = find_map(session, sae_id=sae_id)
    label = ClusterLabel(sae_id=sae_id, membership=run.membership, cluster=cluster, text=text, author_id=author_id)
    session.add(label)
    session.commit()
    return label


def next_unlabelled_in_cluster(session: Session, *, sae_id: int, cluster: int, after: int = -1) -> int | None:
    """The cluster's first member without a feature label after index `after`, wrapping round; None when all are."""
    labelled = exists().where(Label.sae_id == sae_id, Label.feature_index == MapPoint.feature_index)
    base = select(MapPoint.feature_index).where(MapPoint.sae_id == sae_id, MapPoint.cluster == cluster, ~labelled)
    found = session.scalar(base.where(MapPoint.feature_index > after).order_by(MapPoint.feature_index).limit(1))
    if found is None:
        found = session.scalar(base.order_by(MapPoint.feature_index).limit(1))
    return found


def map_point(session: Session, *, sae_id: int, feature_index: int) -> MapPoint | None:
    """A feature's point on the current map, if the SAE has one."""
    return session.get(MapPoint, (sae_id, feature_index))


def coactive_partners(session: Session, *, sae_id: int, feature_index: int) -> list[Any]:
    """[[feature_index, jaccard], ...] of the features that fire most with this one (empty if unrecorded)."""
    row = session.get(Coactivation, (sae_id, feature_index))
    return row.partners if row is not None else []


def bookmark_features(session: Session, *, list_id: int, sae_id: int, indices: list[int]) -> None:
    """Add features selected on the map to a bookmark list, in one transaction (those already in it stay as they are)."""
    have = set(session.scalars(select(Bookmark.feature_index).where(Bookmark.list_id == list_id, Bookmark.sae_id == sae_id)))
    session.add_all(Bookmark(list_id=list_id, sae_id=sae_id, feature_index=i) for i in indices if i not in have)
    session.commit()


def tag_features(session: Session, *, sae_id: int, indices: list[int], tag: str, author_id: int | None) -> None:
    """Put a tag (created on first use, matched ignoring case) on features selected on the map, in one transaction."""
    row = tag_row(session, tag)
    have = set(session.scalars(select(FeatureTag.feature_index).where(FeatureTag.sae_id == sae_id,
                                                                        FeatureTag.tag_id == row.id)))
    session.add_all(FeatureTag(sae_id=sae_id, feature_index=i, tag_id=row.id, author_id=author_id)
                    for i in indices if i not in have)
    session.commit()
