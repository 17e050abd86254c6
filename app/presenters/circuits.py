"""The circuits pages' views: the run form with the set's SAEs and saved graphs, and one graph ready to draw.

The graph page embeds its graph as JSON for static/circuits.js, each feature node carrying its label, top
tokens, feature-page link and SAE id, so hovering, clicking and pinning need no further request.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from sae_core.attribution import AttributionConfig, AttributionGraph

from .. import crud
from ..attribution_schemas import graph_url
from ..models import AttributionGraphRow, Sae

TOP_ROWS = 20


def _sae_summary(saes: list[Sae]) -> list[dict[str, Any]]:
    return [{"id": s.id, "name": s.name, "site": s.site, "d_sae": s.d_sae} for s in saes]


def circuits_page(session: Session, set_key: str) -> dict[str, Any]:
    """The form's context: the set's SAEs, their model, the defaults and the saved graphs."""
    saes = crud.set_saes(session, key=set_key)
    graphs = [(row, graph_url(set_key, row.id)) for row in crud.list_graphs(session, set_key=set_key)]
    return {"set_key": set_key, "saes": _sae_summary(saes), "model": saes[0].model_name,
            "defaults": AttributionConfig(), "graphs": graphs}


def _enriched_nodes(session: Session, graph: AttributionGraph, sae_ids: list[int]) -> list[dict[str, Any]]:
    """Each node as JSON, features with their label, top tokens, SAE and page."""
    nodes = [vars(n) | {"token": graph.tokens[n.pos]} for n in graph.nodes]
    for layer, sae_id in enumerate(sae_ids):
        mine = [n for n in nodes if n["kind"] == "feature" and n["layer"] == layer]
        blurbs = crud.feature_blurbs(session, sae_id=sae_id, indices=[n["feature"] for n in mine])
        for n in mine:
            n |= blurbs.get(n["feature"], {"label": "", "top": ""})
            n |= {"sae_id": sae_id, "href": f"/saes/{sae_id}/features/{n['feature']}"}
    return nodes


def graph_page(session: Session, set_key: str, row: AttributionGraphRow) -> dict[str, Any]:
    """The graph page's context: the graph, its largest nodes for the table, the JSON the drawing reads."""
    graph = AttributionGraph.from_dict(row.graph)
    nodes = _enriched_nodes(session, graph, row.sae_ids)
    by_id = {n["node_id"]: n for n in nodes}
    data = graph.to_dict() | {"nodes": nodes, "id": row.id, "sae_ids": row.sae_ids}
    # "<" escaped: the JSON sits in a <script> element, where "</script>" in a prompt would end it.
    return {"set_key": set_key, "row": row, "graph": graph, "top": [by_id[n.node_id] for n in graph.top(TOP_ROWS)],
            "data_json": Markup(json.dumps(data).replace("<", "\\u003c"))}
