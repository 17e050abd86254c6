"""A transcoder set's replacement-model graph on the circuits pages: pruned at any thresholds from its stored
adjacency (no model run), drawn by static/circuits.js, exported as Neuronpedia graph JSON.

A view's nodes carry what the drawing shows: their influence on the outputs (sizing them), features their label,
top tokens and page, outputs their probability; ids are `LAYER_FEATURE_POS` for features (what pins name),
`eLAYER_POS` for errors, `tPOS` for embeddings and `oK` for the K-th likeliest output.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from sae_core.attribution.influence import Pruned
from sae_core.attribution.neuronpedia import neuronpedia_name, replacement_graph_json
from sae_core.attribution.replacement_graph import ReplacementGraph

from .. import crud
from ..attribution_schemas import circuits_url
from ..models import AttributionGraphRow
from .circuits import TOP_ROWS, feature_blurbs, script_json, shown

REPLACEMENT = "replacement"


def thresholds(row: AttributionGraphRow, node: float | None, edge: float | None) -> tuple[float, float]:
    """The thresholds asked for, each defaulting to the run's."""
    return (row.graph["node_threshold"] if node is None else node, row.graph["edge_threshold"] if edge is None else edge)


def stored_graph(row: AttributionGraphRow) -> ReplacementGraph:
    """The row's graph with its adjacency; crud.NotFound for a row that is not a readable replacement graph."""
    if row.method != REPLACEMENT or row.adjacency is None:
        raise crud.NotFound(f"graph {row.id} is not a replacement-model graph")
    try:
        return ReplacementGraph.from_stored(row.graph, row.adjacency)
    except (KeyError, TypeError, ValueError) as err:
        raise crud.NotFound(f"graph {row.id} is stored damaged and cannot be read: {err}") from None


def _node(graph: ReplacementGraph, data: dict[str, Any], n: int, pruned: Pruned) -> dict[str, Any]:
    """Node n as the drawing reads it."""
    layout, n_pos = graph.layout, len(graph.token_ids)
    influence = float(pruned.influence[n])
    if n < layout.features:
        layer, pos, index = (int(t[n]) for t in (graph.feature_layer, graph.feature_pos, graph.feature_index))
        node = {"node_id": f"{layer}_{index}_{pos}", "kind": "feature", "layer": layer, "pos": pos, "feature": index,
                "activation": float(graph.feature_activation[n])}
    elif n < layout.embedding_slice.start:
        layer, pos = divmod(n - layout.features, n_pos)
        node = {"node_id": f"e{layer}_{pos}", "kind": "error", "layer": layer, "pos": pos, "feature": None,
                "activation": None}
    elif n < layout.size - layout.logits:
        pos = n - layout.embedding_slice.start
        node = {"node_id": f"t{pos}", "kind": "embedding", "layer": -1, "pos": pos, "feature": None, "activation": None}
    else:
        k = n - (layout.size - layout.logits)
        node = {"node_id": f"o{k}", "kind": "metric", "layer": graph.n_layers, "pos": n_pos - 1, "feature": None,
                "activation": None, "probability": float(graph.logit_probabilities[k]),
                "output": data["logit_texts"][k]}
        influence = float(graph.logit_probabilities[k])
    token = data["tokens"][node["pos"]]
    return node | {"effect": influence, "token": token, "token_shown": shown(token)}


def graph_view(session: Session, row: AttributionGraphRow, graph: ReplacementGraph, node_threshold: float,
               edge_threshold: float) -> dict[str, Any]:
    """The graph pruned at the thresholds: nodes and links to draw, their counts and the pruned graph's scores."""
    data = row.graph
    pruned = graph.prune(node_threshold, edge_threshold)
    kept = pruned.nodes.nonzero()[:, 0].tolist()
    nodes = {n: _node(graph, data, n, pruned) for n in kept}
    blurbs = feature_blurbs(session, {v["node_id"]: (v["layer"], v["feature"]) for v in nodes.values()
                                      if v["kind"] == "feature"}, row.sae_ids)
    for node in nodes.values():
        node.update(blurbs.get(node["node_id"], {}))
    target_E, source_E = pruned.edges.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": float(graph.adjacency[t, s])}
             for t, s in zip(target_E.tolist(), source_E.tolist(), strict=True)]
    scores = graph.scores(pruned)
    return {"node_threshold": node_threshold, "edge_threshold": edge_threshold, "nodes": list(nodes.values()),
            "links": links, "replacement_score": scores.replacement, "completeness_score": scores.completeness}


def replacement_page(session: Session, row: AttributionGraphRow, node_threshold: float | None,
                     edge_threshold: float | None) -> dict[str, Any]:
    """The graph page's context: the run's figures, the view at the thresholds asked (default: the run's), its
    most influential features for the table, and the JSON the drawing reads."""
    graph, data = stored_graph(row), row.graph
    view = graph_view(session, row, graph, *thresholds(row, node_threshold, edge_threshold))
    features = sorted((n for n in view["nodes"] if n["kind"] == "feature"), key=lambda n: -n["effect"])
    outputs = [(shown(text), p) for text, p in zip(data["logit_texts"], data["logit_probabilities"], strict=True)]
    drawing = view | {"method": REPLACEMENT, "id": row.id, "sae_ids": row.sae_ids, "prompt": row.prompt,
                      "tokens": data["tokens"], "sites": data["sites"], "metric": "outputs",
                      "position": len(data["tokens"]) - 1, "target": data["target"]}
    return {"url": circuits_url(row.set_id), "row": row, "data": data, "view": view, "outputs": outputs,
            "layout": graph.layout, "edges": int((graph.adjacency != 0).sum()), "top": features[:TOP_ROWS],
            "data_json": script_json(drawing)}


def replacement_export(session: Session, row: AttributionGraphRow, *, model_id: str | None,
                       node_threshold: float | None, edge_threshold: float | None) -> dict[str, Any]:
    """The graph pruned at the thresholds (default: the run's) in Neuronpedia's graph JSON, each feature's
    current label as its clerp."""
    graph, data = stored_graph(row), row.graph
    node_cut, edge_cut = thresholds(row, node_threshold, edge_threshold)
    features = {f"{int(layer)}_{int(index)}_{int(pos)}": (int(layer), int(index)) for layer, index, pos
                in zip(graph.feature_layer, graph.feature_index, graph.feature_pos, strict=True)}
    clerps = {node_id: b["label"] for node_id, b in feature_blurbs(session, features, row.sae_ids).items() if b["label"]}
    scan = model_id or neuronpedia_name(crud.find_sae(session, ref=row.sae_ids[0]).model_name)
    return replacement_graph_json(graph, graph.prune(node_cut, edge_cut), data["tokens"], data["logit_texts"],
                                  row.prompt, slug=f"saescope-graph-{row.id}", scan=scan, transcoders=data["sites"],
                                  node_threshold=node_cut, edge_threshold=edge_cut, clerps=clerps)
