"""The circuits pages' views: the run form with the set's SAEs and saved graphs, and one graph ready to draw.

The graph page embeds its graph as JSON for static/circuits.js, each feature node carrying its label, top
tokens, feature-page link and SAE id, so hovering, clicking and pinning need no further request.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from sae_core.attribution import AttributionConfig, AttributionGraph, neuronpedia_graph
from sae_core.attribution.neuronpedia import neuronpedia_name
from sae_core.saes import ARCHITECTURES, transcodes

from .. import crud
from ..attribution_schemas import ReplacementIn, circuits_url, graph_url
from ..models import AttributionGraphRow, Sae

TOP_ROWS = 20


def _sae_summary(saes: list[Sae]) -> list[dict[str, Any]]:
    return [{"id": s.id, "name": s.name, "site": s.site, "d_sae": s.d_sae} for s in saes]


def transcoder_set(saes: list[Sae]) -> bool:
    """Whether every SAE is a transcoder (a set whose graph is the replacement model's)."""
    return all(sae.architecture in ARCHITECTURES and transcodes(sae.architecture) for sae in saes)


def circuits_page(session: Session, set_ref: str) -> dict[str, Any]:
    """The form's context: the set, its SAEs, the defaults and the saved graphs."""
    sae_set, saes = crud.set_saes(session, ref=set_ref)
    graphs = [(row, graph_url(sae_set.id, row.id)) for row in crud.list_graphs(session, set_id=sae_set.id)]
    return {"sae_set": sae_set, "url": circuits_url(sae_set.id), "saes": _sae_summary(saes),
            "defaults": AttributionConfig(), "graphs": graphs, "replacement": transcoder_set(saes),
            "replacement_defaults": ReplacementIn.model_construct(sae_set="", prompt="")}


def shown(text: str | None) -> str:
    """A token as a quoted string with its spaces and newlines visible (HTML escaping is the template's)."""
    return "" if text is None else json.dumps(text, ensure_ascii=False)


def feature_blurbs(session: Session, features: dict[str, tuple[int, int]], sae_ids: list[int]
                   ) -> dict[str, dict[str, Any]]:
    """Per feature node id (given as its (layer, feature index)): its label, top tokens, SAE and page (the SAE
    at a node's layer is sae_ids[layer])."""
    found: dict[str, dict[str, Any]] = {}
    for layer, sae_id in enumerate(sae_ids):
        mine = {node_id: index for node_id, (at, index) in features.items() if at == layer}
        blurbs = crud.feature_blurbs(session, sae_id=sae_id, indices=list(mine.values()))
        for node_id, index in mine.items():
            found[node_id] = blurbs.get(index, {"label": "", "top": ""}) | {
                "sae_id": sae_id, "href": f"/saes/{sae_id}/features/{index}"}
    return found


def _feature_blurbs(session: Session, graph: AttributionGraph, sae_ids: list[int]) -> dict[str, dict[str, Any]]:
    features = {n.node_id: (n.layer, n.feature) for n in graph.nodes if n.kind == "feature" and n.feature is not None}
    return feature_blurbs(session, features, sae_ids)


def _enriched_nodes(session: Session, graph: AttributionGraph, sae_ids: list[int]) -> list[dict[str, Any]]:
    """Each node as JSON, features with their label, top tokens, SAE and page."""
    blurbs = _feature_blurbs(session, graph, sae_ids)
    return [vars(n) | {"token": graph.tokens[n.pos], "token_shown": shown(graph.tokens[n.pos])} | blurbs.get(n.node_id, {})
            for n in graph.nodes]


def neuronpedia_export(session: Session, row: AttributionGraphRow, *, model_id: str | None, source_set: str | None,
                       node_threshold: float | None, edge_threshold: float | None) -> dict[str, Any]:
    """A saved graph in Neuronpedia's graph JSON, each feature's current label as its clerp. Without `model_id`
    the scan is made from the model's name (Neuronpedia knows a model by its own id, e.g. `gpt2-small`)."""
    graph = AttributionGraph.from_dict(row.graph)
    scan = model_id or neuronpedia_name(crud.find_sae(session, ref=row.sae_ids[0]).model_name)
    clerps = {node_id: b["label"] for node_id, b in _feature_blurbs(session, graph, row.sae_ids).items() if b["label"]}
    return neuronpedia_graph(graph, slug=f"saescope-graph-{row.id}", scan=scan, source_set=source_set, clerps=clerps,
                             node_threshold=node_threshold, edge_threshold=edge_threshold)


def graph_page(session: Session, row: AttributionGraphRow) -> dict[str, Any]:
    """The graph page's context: the graph, its largest nodes for the table, the JSON the drawing reads."""
    graph = AttributionGraph.from_dict(row.graph)
    nodes = _enriched_nodes(session, graph, row.sae_ids)
    by_id = {n["node_id"]: n for n in nodes}
    data = graph.to_dict() | {"nodes": nodes, "id": row.id, "sae_ids": row.sae_ids}
    return {"url": circuits_url(row.set_id), "row": row, "graph": graph, "target": shown(graph.target),
            "contrast": shown(graph.contrast), "top": [by_id[n.node_id] for n in graph.top(TOP_ROWS)],
            "data_json": script_json(data)}


def script_json(data: dict[str, Any]) -> Markup:
    """JSON for a <script> element, "<" escaped: "</script>" in a prompt would otherwise end the element."""
    return Markup(json.dumps(data).replace("<", "\\u003c"))
