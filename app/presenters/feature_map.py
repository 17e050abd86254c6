"""The feature map's views: the map page, a cluster's page, and the feature page's co-activation section."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from .. import crud
from ..map_schemas import ClusterDetailOut, ClusterLabelOut, ClusterMemberOut, ClusterOut
from ..models import FeatureMapRun, MapCluster, User

THUMB = 160
"""Side of the feature page's map thumbnail, in pixels."""


def map_context(session: Session, sae_id: int, user: User | None) -> dict[str, Any]:
    """What map.html needs; the points themselves come from the JSON API, fetched by static/map.js."""
    sae = crud.find_sae(session, ref=sae_id)
    run = session.get(FeatureMapRun, sae.id)
    writer = user if user is not None and user.can_write else None
    return {"sae": sae, "run": run, "clusters": crud.map_clusters(session, sae_id=sae.id) if run else [],
            "cluster_labels": crud.cluster_label_texts(session, sae_id=sae.id),
            "lists": crud.bookmark_lists(session, owner_id=writer.id) if writer else [],
            "tags": crud.list_tags(session) if writer else []}


def cluster_detail(session: Session, sae_id: int, cluster: int) -> ClusterDetailOut:
    """A cluster with its label history and members (the cluster page and its API answer)."""
    row = crud.find_cluster(session, sae_id=sae_id, cluster=cluster)
    labels = crud.cluster_label_history(session, sae_id=sae_id, cluster=cluster)
    return ClusterDetailOut(
        **cluster_out(row, labels[0].text if labels else None).model_dump(),
        labels=[ClusterLabelOut(id=label.id, text=label.text, author=label.author.name if label.author else None,
                                created_at=label.created_at) for label in labels],
        members=[ClusterMemberOut(**vars(m)) for m in crud.cluster_members(session, sae_id=sae_id, cluster=cluster)])


def cluster_out(row: MapCluster, label: str | None) -> ClusterOut:
    return ClusterOut(cluster=row.cluster, size=row.size, x=row.x, y=row.y, top_tokens=row.top_tokens, label=label)


def coact_context(session: Session, sae_id: int, index: int) -> dict[str, Any]:
    """The feature page's "fires together with" list and its place on the map thumbnail."""
    crud.find_feature(session, sae_id=sae_id, feature_index=index)  # 404 for an unknown feature
    partners = crud.coactive_partners(session, sae_id=sae_id, feature_index=index)
    labels = crud.label_texts(session, sae_id=sae_id, indices=[p[0] for p in partners])
    point = crud.map_point(session, sae_id=sae_id, feature_index=index)
    clusters = crud.map_clusters(session, sae_id=sae_id) if point is not None else []
    return {"sae_id": sae_id, "index": index, "partners": partners, "partner_labels": labels, "point": point,
            "thumbnail": thumbnail(clusters, point) if clusters and point is not None and point.x is not None else None}


def thumbnail(clusters: list[MapCluster], point: Any) -> Markup:
    """An SVG of the map's clusters (a dot per cluster, sized by members) with this feature marked.

    Cluster centres stand for the map: a few hundred circles instead of thousands of points per page view.
    """
    xs, ys = [c.x for c in clusters] + [point.x], [c.y for c in clusters] + [point.y]
    lo_x, lo_y = min(xs), min(ys)
    span = max(max(xs) - lo_x, max(ys) - lo_y) or 1.0
    pad = 6

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - lo_x) / span * (THUMB - 2 * pad), THUMB - pad - (y - lo_y) / span * (THUMB - 2 * pad)

    dots = "".join(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{min(6.0, 1 + c.size ** 0.5 / 3):.1f}" class="cl"/>'
                   for c in clusters for cx, cy in [at(c.x, c.y)])
    mx, my = at(point.x, point.y)
    where = f", cluster {point.cluster}" if point.cluster is not None else ""
    title = escape(f"feature {point.feature_index} on the map{where}")
    return Markup(f'<svg viewBox="0 0 {THUMB} {THUMB}" width="{THUMB}" height="{THUMB}" role="img" class="map-thumb">'
                  f"<title>{title}</title>{dots}"
                  f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="5" class="here"/></svg>')
