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
from .influence import Pruned
from .replacement_graph import ReplacementGraph

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


def node_entry(kind: str, *, pos: int, layer: int, feature: int | None, vocab: int, activation: float,
               influence: float, clerp: str, token_prob: float = 0.0, is_target: bool = False) -> dict[str, Any]:
    """One node with the ids the viewers expect: `layer` is the model layer (the top layer + 1 for a logit),
    `vocab` the token id of an embedding or logit."""
    common = {"ctx_idx": pos, "feature_type": FEATURE_TYPES[kind], "influence": influence, "activation": activation,
              "token_prob": token_prob, "is_target_logit": is_target, "run_idx": 0, "reverse_ctx_idx": 0,
              "clerp": clerp}
    if kind == "embedding":
        return {**common, "node_id": f"E_{vocab}_{pos}", "feature": pos, "layer": "E", "jsNodeId": f"E_{vocab}-{pos}"}
    if kind == "metric":
        return {**common, "node_id": f"{layer}_{vocab}_{pos}", "feature": vocab, "layer": str(layer),
                "jsNodeId": f"L_{vocab}-{pos}"}
    if kind == "error":
        return {**common, "node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer),
                "jsNodeId": f"{layer}_{pos}-0"}
    assert feature is not None  # a feature node always has its index
    return {**common, "node_id": f"{layer}_{feature}_{pos}", "feature": cantor_pair(layer, feature),
            "layer": str(layer), "jsNodeId": f"{layer}_{feature}-0"}


def _node(graph: AttributionGraph, node: GraphNode, layers: list[int], clerp: str) -> dict[str, Any]:
    """One node of a residual-SAE graph (one metric node, the target's)."""
    if node.kind == "metric":
        prob = math.exp(graph.metric_value) if graph.contrast is None else dict(graph.next_tokens).get(graph.target, 0.0)
        return node_entry("metric", pos=node.pos, layer=max(layers) + 1, feature=None, vocab=graph.target_id,
                          activation=node.activation, influence=node.share, token_prob=prob, is_target=True,
                          clerp=f'{graph.metric} of "{graph.target}" = {graph.metric_value:.3f}')
    embedding = node.kind == "embedding"
    return node_entry(node.kind, pos=node.pos, layer=-1 if embedding else layers[node.layer], feature=node.feature,
                      vocab=graph.token_ids[node.pos] if embedding else -1, activation=node.activation,
                      influence=node.share, clerp=clerp)


def check_names(scan: str, slug: str) -> None:
    """Refuse a `scan` or `slug` Neuronpedia's upload would."""
    for field, value in (("scan", scan), ("slug", slug)):
        if not NAME.match(value):
            raise AttributionError(field, f"the graph's {field} {value!r} may hold only letters, digits, '_', '.' "
                                          "and '-' (Neuronpedia refuses others)")


def graph_metadata(slug: str, scan: str, transcoders: list[str], tokens: list[str], prompt: str,
                   node_threshold: float, edge_threshold: float) -> dict[str, Any]:
    return {
        "slug": slug, "scan": scan, "schema_version": SCHEMA_VERSION, "transcoder_list": transcoders,
        "prompt_tokens": tokens, "prompt": prompt, "node_threshold": node_threshold,
        "pruning_settings": {"node_threshold": node_threshold, "edge_threshold": edge_threshold},
        "info": {"generator": GENERATOR},
    }


Q_PARAMS = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}


def neuronpedia_graph(graph: AttributionGraph, slug: str, scan: str, *, source_set: str | None = None,
                      clerps: Mapping[str, str] | None = None, node_threshold: float | None = None,
                      edge_threshold: float | None = None) -> dict[str, Any]:
    """The pruned graph as `{metadata, qParams, nodes, links}`. `scan` is Neuronpedia's id of the model,
    `source_set` the Neuronpedia source set holding the SAEs' features (so the viewer links to their dashboards),
    `clerps` a label per node id."""
    check_names(scan, slug)
    node_cut = graph.node_threshold if node_threshold is None else node_threshold
    edge_cut = graph.edge_threshold if edge_threshold is None else edge_threshold
    nodes, links = graph.pruned(node_cut, edge_cut)
    layers = _layers(graph)
    labels = clerps or {}
    exported = {n.node_id: _node(graph, n, layers, labels.get(n.node_id, "")) for n in nodes}
    metadata = graph_metadata(slug, scan, graph.saes, graph.tokens, graph.prompt, node_cut, edge_cut)
    if source_set:
        metadata["feature_details"] = {"neuronpedia_source_set": source_set}
    return {
        "metadata": metadata,
        "qParams": Q_PARAMS,
        "nodes": list(exported.values()),
        "links": [{"source": exported[link.source]["node_id"], "target": exported[link.target]["node_id"],
                   "weight": link.weight} for link in links],
    }


def replacement_graph_json(graph: ReplacementGraph, pruned: Pruned, tokens: list[str], logit_texts: list[str],
                           prompt: str, slug: str, scan: str, transcoders: list[str], node_threshold: float,
                           edge_threshold: float, clerps: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A replacement-model graph's pruned nodes and edges as `{metadata, qParams, nodes, links}`: features,
    MLP errors, embeddings and the logit nodes (the likeliest first, marked the target). `tokens` are the
    prompt's tokens as text, `logit_texts` the logit nodes'."""
    check_names(scan, slug)
    layout, labels = graph.layout, clerps or {}
    n_pos, last = len(graph.token_ids), len(graph.token_ids) - 1
    entries: dict[int, dict[str, Any]] = {}
    for n in pruned.nodes.nonzero()[:, 0].tolist():
        influence = float(pruned.cumulative[n])
        if n < layout.features:
            layer, pos, index = (int(t[n]) for t in (graph.feature_layer, graph.feature_pos, graph.feature_index))
            entry = node_entry("feature", pos=pos, layer=layer, feature=index, vocab=-1,
                               activation=float(graph.feature_activation[n]), influence=influence, clerp="")
        elif n < layout.embedding_slice.start:
            layer, pos = divmod(n - layout.features, n_pos)
            entry = node_entry("error", pos=pos, layer=layer, feature=None, vocab=-1, activation=0.0,
                               influence=influence, clerp="")
        elif n < layout.size - layout.logits:
            pos = n - layout.embedding_slice.start
            entry = node_entry("embedding", pos=pos, layer=-1, feature=None, vocab=graph.token_ids[pos],
                               activation=0.0, influence=influence, clerp="")
        else:
            k = n - (layout.size - layout.logits)
            prob = float(graph.logit_probabilities[k])
            entry = node_entry("metric", pos=last, layer=graph.n_layers, feature=None, vocab=graph.logit_tokens[k],
                               activation=0.0, token_prob=prob, is_target=k == 0,
                               influence=influence, clerp=f"output {logit_texts[k]!r} (p={prob:.3f})")
        entry["clerp"] = labels.get(entry["node_id"], entry["clerp"])
        entries[n] = entry
    target_E, source_E = pruned.edges.nonzero(as_tuple=True)
    return {
        "metadata": graph_metadata(slug, scan, transcoders, tokens, prompt, node_threshold, edge_threshold),
        "qParams": Q_PARAMS,
        "nodes": list(entries.values()),
        "links": [{"source": entries[s]["node_id"], "target": entries[t]["node_id"], "weight": float(graph.adjacency[t, s])}
                  for t, s in zip(target_E.tolist(), source_E.tolist(), strict=True)],
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
