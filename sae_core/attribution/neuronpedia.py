"""A graph in Neuronpedia's (and circuit-tracer's) attribution-graph JSON, so it opens in the viewers people use.

The viewers know four node types by name; SAE features take the feature type ("cross layer transcoder") and
error nodes the error type, which is how those viewers draw and colour them. `layer` is the model layer of the
node's site, or the site's index when two sites share a layer (ids would collide otherwise).
"""

from __future__ import annotations

from typing import Any

from ..sites import parse_site
from .graph import AttributionGraph, GraphNode

FEATURE_TYPES = {"feature": "cross layer transcoder", "error": "mlp reconstruction error",
                 "embedding": "embedding", "metric": "logit"}


def _layers(graph: AttributionGraph) -> list[int]:
    layers = [parse_site(name).layer for name in graph.sites]
    return layers if len(set(layers)) == len(layers) else list(range(len(layers)))


def _node(graph: AttributionGraph, node: GraphNode, layers: list[int]) -> dict[str, Any]:
    """One node with the ids the viewers expect."""
    common = {"ctx_idx": node.pos, "feature_type": FEATURE_TYPES[node.kind], "influence": node.share,
              "activation": node.activation, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
              "reverse_ctx_idx": 0, "clerp": ""}
    if node.kind == "embedding":
        vocab = graph.token_ids[node.pos]
        return {**common, "node_id": f"E_{vocab}_{node.pos}", "feature": node.pos, "layer": "E",
                "jsNodeId": f"E_{vocab}-{node.pos}"}
    if node.kind == "metric":
        top = str(max(layers) + 1)
        prob = dict(graph.next_tokens).get(graph.target, 0.0)
        return {**common, "node_id": f"{top}_{graph.target_id}_{node.pos}", "feature": graph.target_id,
                "layer": top, "jsNodeId": f"L_{graph.target_id}-{node.pos}", "token_prob": prob,
                "is_target_logit": True, "clerp": f'{graph.metric} of "{graph.target}" = {graph.metric_value:.3f}'}
    layer = layers[node.layer]
    if node.kind == "error":
        return {**common, "node_id": f"0_{layer}_{node.pos}", "feature": -1, "layer": str(layer),
                "jsNodeId": f"{layer}_{node.pos}-0"}
    return {**common, "node_id": f"{layer}_{node.feature}_{node.pos}", "feature": node.feature,
            "layer": str(layer), "jsNodeId": f"{layer}_{node.feature}-0"}


def neuronpedia_graph(graph: AttributionGraph, slug: str, scan: str, node_threshold: float | None = None,
                      edge_threshold: float | None = None) -> dict[str, Any]:
    """The pruned graph as `{metadata, qParams, nodes, links}`; `scan` names the model, as Neuronpedia's does."""
    nodes, links = graph.pruned(node_threshold, edge_threshold)
    layers = _layers(graph)
    exported = {n.node_id: _node(graph, n, layers) for n in nodes}
    return {
        "metadata": {
            "slug": slug, "scan": scan, "transcoder_list": graph.saes, "prompt_tokens": graph.tokens,
            "prompt": graph.prompt, "node_threshold": graph.node_threshold if node_threshold is None else node_threshold,
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": list(exported.values()),
        "links": [{"source": exported[link.source]["node_id"], "target": exported[link.target]["node_id"],
                   "weight": link.weight} for link in links],
    }
