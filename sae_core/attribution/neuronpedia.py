"""A graph in Neuronpedia's (and circuit-tracer's) attribution-graph JSON, so it opens in the viewers people use;
and the reading back of the nodes and links such a file holds.

The viewers know four node types by name; SAE features take the feature type ("cross layer transcoder") and
error nodes the error type, which is how those viewers draw and colour them. `layer` is the model layer of the
node's site, or the site's index when two sites share a layer (ids would collide otherwise).

Neuronpedia reads a feature node's layer and index from its `feature` number: a Cantor pair of the two when the
metadata says `schema_version: 1` (apps/webapp/app/[modelId]/graph/utils.ts), which is what its own generator
writes; without it, it can decode them for gemma-2-2b only. Its upload refuses a `scan` or `slug` holding any
character outside letters, digits, `_`, `.` and `-` (apps/webapp/app/api/graph/save-to-db/route.ts). The schema
itself is tests/fixtures/neuronpedia_graph/graph-schema.json, which the tests validate every export against.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..sites import parse_site
from .config import AttributionError
from .graph import AttributionGraph, GraphNode

FEATURE_TYPES = {"feature": "cross layer transcoder", "error": "mlp reconstruction error",
                 "embedding": "embedding", "metric": "logit"}
KINDS = {name: kind for kind, name in FEATURE_TYPES.items()}
SCHEMA_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
"""What Neuronpedia's upload takes as a graph's `scan` (its model id) and `slug`."""
GENERATOR = {"name": "saescope"}
"""metadata.info.generator: which code wrote the graph."""


def cantor_pair(layer: int, index: int) -> int:
    """Neuronpedia's feature number of (layer, index) in schema version 1."""
    return (layer + index) * (layer + index + 1) // 2 + index


def cantor_unpair(value: int) -> tuple[int, int]:
    """(layer, index) of a schema-version-1 feature number, as Neuronpedia decodes it."""
    w = (math.isqrt(8 * value + 1) - 1) // 2
    index = value - w * (w + 1) // 2
    return w - index, index


def neuronpedia_name(text: str) -> str:
    """A `scan` or `slug` Neuronpedia's upload takes, made from a model name, hub id, path or file stem: its last
    path part, lower-cased, other characters as `-`. A real Neuronpedia model id should be given where known."""
    tail = text.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9_.-]+", "-", tail).strip("-.") or "model"


def _layers(graph: AttributionGraph) -> list[int]:
    layers = [parse_site(name).layer for name in graph.sites]
    return layers if len(set(layers)) == len(layers) else list(range(len(layers)))


def _node(graph: AttributionGraph, node: GraphNode, layers: list[int], clerp: str) -> dict[str, Any]:
    """One node with the ids the viewers expect."""
    common = {"ctx_idx": node.pos, "feature_type": FEATURE_TYPES[node.kind], "influence": node.share,
              "activation": node.activation, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
              "reverse_ctx_idx": 0, "clerp": clerp}
    if node.kind == "embedding":
        vocab = graph.token_ids[node.pos]
        return {**common, "node_id": f"E_{vocab}_{node.pos}", "feature": node.pos, "layer": "E",
                "jsNodeId": f"E_{vocab}-{node.pos}"}
    if node.kind == "metric":
        top = str(max(layers) + 1)
        prob = math.exp(graph.metric_value) if graph.contrast is None else dict(graph.next_tokens).get(graph.target, 0.0)
        return {**common, "node_id": f"{top}_{graph.target_id}_{node.pos}", "feature": graph.target_id,
                "layer": top, "jsNodeId": f"L_{graph.target_id}-{node.pos}", "token_prob": prob,
                "is_target_logit": True, "clerp": f'{graph.metric} of "{graph.target}" = {graph.metric_value:.3f}'}
    layer = layers[node.layer]
    if node.kind == "error":
        return {**common, "node_id": f"0_{layer}_{node.pos}", "feature": -1, "layer": str(layer),
                "jsNodeId": f"{layer}_{node.pos}-0"}
    assert node.feature is not None  # a feature node always has its index
    return {**common, "node_id": f"{layer}_{node.feature}_{node.pos}", "feature": cantor_pair(layer, node.feature),
            "layer": str(layer), "jsNodeId": f"{layer}_{node.feature}-0"}


def neuronpedia_graph(graph: AttributionGraph, slug: str, scan: str, *, source_set: str | None = None,
                      clerps: Mapping[str, str] | None = None, node_threshold: float | None = None,
                      edge_threshold: float | None = None) -> dict[str, Any]:
    """The pruned graph as `{metadata, qParams, nodes, links}`. `scan` is Neuronpedia's id of the model,
    `source_set` the Neuronpedia source set holding the SAEs' features (so the viewer links to their dashboards),
    `clerps` a label per node id."""
    for field, value in (("scan", scan), ("slug", slug)):
        if not NAME.match(value):
            raise AttributionError(field, f"the graph's {field} {value!r} may hold only letters, digits, '_', '.' "
                                          "and '-' (Neuronpedia refuses others)")
    node_cut = graph.node_threshold if node_threshold is None else node_threshold
    edge_cut = graph.edge_threshold if edge_threshold is None else edge_threshold
    nodes, links = graph.pruned(node_cut, edge_cut)
    layers = _layers(graph)
    labels = clerps or {}
    exported = {n.node_id: _node(graph, n, layers, labels.get(n.node_id, "")) for n in nodes}
    metadata: dict[str, Any] = {
        "slug": slug, "scan": scan, "schema_version": SCHEMA_VERSION, "transcoder_list": graph.saes,
        "prompt_tokens": graph.tokens, "prompt": graph.prompt, "node_threshold": node_cut,
        "pruning_settings": {"node_threshold": node_cut, "edge_threshold": edge_cut},
        "info": {"generator": GENERATOR},
    }
    if source_set:
        metadata["feature_details"] = {"neuronpedia_source_set": source_set}
    return {
        "metadata": metadata,
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": list(exported.values()),
        "links": [{"source": exported[link.source]["node_id"], "target": exported[link.target]["node_id"],
                   "weight": link.weight} for link in links],
    }


@dataclass(frozen=True)
class ReadNode:
    """A node of a Neuronpedia graph file, in saescope's terms."""

    node_id: str
    kind: str
    """feature, error, embedding or metric."""
    layer: int | None
    """The model layer (a feature's decoded from its number); None for embeddings."""
    pos: int
    feature: int | None
    """A feature's index within its layer's dictionary; None for other nodes."""
    activation: float | None
    influence: float | None
    clerp: str


def read_neuronpedia_graph(data: Mapping[str, Any]) -> tuple[list[ReadNode], list[tuple[str, str, float]]]:
    """The nodes and the (source, target, weight) links of a graph in Neuronpedia's JSON (schema version 1)."""
    if data["metadata"].get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"only schema version {SCHEMA_VERSION} graphs are read (their feature numbers are Cantor pairs)")
    nodes = []
    for n in data["nodes"]:
        kind = KINDS[n["feature_type"]]
        layer, feature = cantor_unpair(n["feature"]) if kind == "feature" else (None, None)
        if kind in ("error", "metric"):
            layer = int(n["layer"])
        nodes.append(ReadNode(n["node_id"], kind, layer, n["ctx_idx"], feature, n.get("activation"), n.get("influence"),
                              n["clerp"]))
    return nodes, [(link["source"], link["target"], link["weight"]) for link in data["links"]]
