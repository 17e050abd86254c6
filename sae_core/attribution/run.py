"""One attribution run end to end: effects, exact verification of the largest, edges, the graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..lm import LoadedModel
from .ablation import ablate, spearman
from .config import AttributionConfig, AttributionRequest
from .dictionaries import Dictionary
from .edges import METRIC, Edges, compute_edges
from .effects import integrated, patching
from .graph import AttributionGraph, GraphLink, GraphNode
from .inputs import Inputs, prepare, top_tokens
from .nodes import EMBED_LAYER, EMBEDDING, ERROR, KIND_NAMES, Nodes, build_nodes
from .prune import layered_candidates, shares
from .states import capture_states

Progress = Callable[[str, float], None]
"""Told the stage's name and the fraction of the whole run done."""


def node_id(nodes: Nodes, n: int, inputs: Inputs) -> str:
    """A stable id: `L_F_P` for features (site index, feature, position), `err_L_P`, `E_TOKEN_P`, `metric`."""
    if n == METRIC:
        return "metric"
    kind, layer, pos = int(nodes.kind_N[n]), int(nodes.layer_N[n]), int(nodes.pos_N[n])
    if kind == EMBEDDING:
        return f"E_{int(inputs.ids_T[pos])}_{pos}"
    if kind == ERROR:
        return f"err_{layer}_{pos}"
    return f"{layer}_{int(nodes.feature_N[n])}_{pos}"


def _layer_shares(nodes: Nodes) -> torch.Tensor:
    """Each node's share within its own layer, the unit pruning works in (see prune.layered_candidates)."""
    share_N = torch.zeros(len(nodes), dtype=torch.float64)
    for layer in nodes.layer_N.unique():
        mine = nodes.layer_N == layer
        share_N[mine] = shares(nodes.effect_N[mine])
    return share_N


def _graph_nodes(nodes: Nodes, shown: list[int], exact: dict[int, float], inputs: Inputs) -> list[GraphNode]:
    share_N = _layer_shares(nodes)
    out = []
    for n in shown:
        kind = int(nodes.kind_N[n])
        out.append(GraphNode(
            node_id=node_id(nodes, n, inputs), kind=KIND_NAMES[kind], layer=int(nodes.layer_N[n]),
            pos=int(nodes.pos_N[n]), feature=int(nodes.feature_N[n]) if kind == 0 else None,
            activation=float(nodes.activation_N[n]), effect=float(nodes.effect_N[n]), share=float(share_N[n]),
            exact=exact.get(n),
        ))
    return out


def _graph_links(nodes: Nodes, edges: Edges, inputs: Inputs) -> list[GraphLink]:
    share_E = shares(edges.weight_E)
    return [GraphLink(node_id(nodes, int(s), inputs), node_id(nodes, int(t), inputs), float(w), float(share))
            for s, t, w, share in zip(edges.source_E, edges.target_E, edges.weight_E, share_E, strict=True)]


def _layer_totals(nodes: Nodes, n_sites: int) -> list[float]:
    return [float(nodes.effect_N[nodes.layer_N == layer].sum()) for layer in range(EMBED_LAYER, n_sites)]


def attribute(lm: LoadedModel, dicts: Sequence[Dictionary], request: AttributionRequest,
              cfg: AttributionConfig = AttributionConfig(), progress: Progress = lambda _s, _f: None) -> AttributionGraph:
    """Explain the request's metric by the dictionaries' features, errors and the token embeddings."""
    model = lm.model
    inputs = prepare(lm.tokenizer, request, cfg)
    progress("effects", 0.0)
    clean, grads, value = patching(model, dicts, inputs)
    patch = clean.zeros() if inputs.corrupted_T is None else capture_states(model, dicts, inputs.corrupted_T)
    first = 1 if cfg.freeze_bos else 0
    patch = patch.held_before(clean, first)
    estimate = grads if cfg.method == "patching" else integrated(model, dicts, inputs, clean, patch, cfg.steps)
    nodes = build_nodes(clean, patch, estimate, inputs.metric.position, first)
    progress("verification", 0.2)
    verified = nodes.effect_N.abs().argsort(descending=True)[:cfg.verify_top].tolist()
    exact_V = ablate(model, dicts, inputs, nodes, verified, clean, patch, cfg.batch_rows)
    progress("edges", 0.4)
    kept = layered_candidates(nodes.effect_N, nodes.layer_N, cfg.node_threshold, cfg.max_nodes, len(dicts))
    edges = compute_edges(model, dicts, inputs, nodes, kept, (clean, patch, grads), cfg.batch_rows,
                          lambda done: progress("edges", 0.4 + 0.6 * done))
    embeddings = (nodes.kind_N == EMBEDDING).nonzero()[:, 0].tolist()
    shown = list(dict.fromkeys([*kept.tolist(), *verified, *embeddings]))
    graph_nodes = _graph_nodes(nodes, shown, dict(zip(verified, exact_V.tolist(), strict=True)), inputs)
    metric_node = GraphNode("metric", "metric", len(dicts), inputs.metric.position, None, value, value, 0.0)
    progress("done", 1.0)
    return AttributionGraph(
        prompt=request.prompt, tokens=list(inputs.tokens), token_ids=inputs.ids_T.tolist(), target=request.target,
        target_id=inputs.metric.target, contrast=request.contrast,
        corrupted=request.corrupted, position=inputs.metric.position, metric=inputs.metric.name, metric_value=value,
        method=cfg.method, steps=cfg.steps if cfg.method == "ig" else 0, sites=[d.site.name for d in dicts],
        saes=[d.name for d in dicts], active_nodes=len(nodes), layer_totals=_layer_totals(nodes, len(dicts)),
        next_tokens=top_tokens(lm, inputs.ids_T[: inputs.metric.position + 1]),
        spearman=spearman(nodes.effect_N[verified], exact_V) if verified else None,
        node_threshold=cfg.node_threshold, edge_threshold=cfg.edge_threshold,
        nodes=[*graph_nodes, metric_node], links=_graph_links(nodes, edges, inputs),
    )
