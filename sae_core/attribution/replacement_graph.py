"""The attribution graph of a prompt's replacement model: which features, errors and tokens make the model say
its likeliest next tokens, through direct effects only (circuit-tracer's graph, on a CPU).

A prompt of 64 tokens through 30 layers has tens of thousands of active features, and each feature's row of
incoming effects costs a backward pass, so rows are computed for the features that matter: first the logits'
rows, then, batch by batch, the features of largest influence on the logits through the rows known so far,
up to `max_feature_nodes` (circuit-tracer's order of work). Features never reached are left out of the graph.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .config import AttributionError, check_fields
from .influence import Layout, Pruned, Scores, graph_scores, normalized, prune
from .replacement import EMBEDDING, ERROR, FEATURE, LOGIT, ReplacementModel, Sources, Target


@dataclass(frozen=True)
class ReplacementConfig:
    """How big a graph to build."""

    max_logits: int = 10
    """Most output tokens taken as the graph's logit nodes."""
    logit_probability: float = 0.95
    """Logit nodes are the likeliest next tokens until their probabilities add to this (at most max_logits)."""
    max_feature_nodes: int = 256
    """Most features whose incoming edges are computed (and which appear in the graph)."""
    batch_rows: int = 16
    """Targets per backward pass: more is faster per row and takes more memory."""
    targets: tuple[int, ...] = ()
    """Token ids the researcher picked as the logit nodes, instead of the likeliest tokens (empty: those)."""

    def __post_init__(self):
        checks = {"max_logits": (1 <= self.max_logits <= 100, "between 1 and 100"),
                  "logit_probability": (0 < self.logit_probability <= 1, "in (0, 1]"),
                  "max_feature_nodes": (self.max_feature_nodes >= 0, "0 or more"),
                  "batch_rows": (self.batch_rows >= 1, "1 or more"),
                  "targets": (len(self.targets) <= self.max_logits and len(set(self.targets)) == len(self.targets),
                              "distinct tokens, at most max_logits of them")}
        check_fields(self, checks)


FEATURE_COLUMNS = ("feature_layer", "feature_pos", "feature_index", "feature_activation")


@dataclass(frozen=True)
class ReplacementGraph:
    """Nodes (features, errors per layer and position, embeddings, logits) and the direct effects among them."""

    token_ids: list[int]
    n_layers: int
    feature_layer: torch.Tensor
    feature_pos: torch.Tensor
    feature_index: torch.Tensor
    feature_activation: torch.Tensor
    logit_tokens: list[int]
    logit_probabilities: torch.Tensor
    adjacency: torch.Tensor
    """[N, N] direct effect of source (column) on target (row), in node order."""
    active_features: int
    """Every active feature of the prompt, of which the graph holds those reached."""

    @property
    def layout(self) -> Layout:
        n_pos = len(self.token_ids)
        return Layout(len(self.feature_index), self.n_layers * n_pos, n_pos, len(self.logit_tokens))

    def scores(self, pruned: Pruned | None = None) -> Scores:
        """Replacement and completeness scores, of the whole graph or of what a pruning kept."""
        adjacency = self.adjacency if pruned is None else self.adjacency * pruned.edges
        return graph_scores(adjacency, self.layout, self.logit_probabilities)

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
        return prune(self.adjacency, self.layout, self.logit_probabilities, node_threshold, edge_threshold)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the adjacency, as JSON; the adjacency is kept apart (`adjacency_bytes`) since a 64-token
        graph's is millions of floats, which JSON would store at several times the size."""
        return {"token_ids": self.token_ids, "n_layers": self.n_layers, "logit_tokens": self.logit_tokens,
                "logit_probabilities": self.logit_probabilities.tolist(), "active_features": self.active_features,
                **{name: getattr(self, name).tolist() for name in FEATURE_COLUMNS}}

    def adjacency_bytes(self) -> bytes:
        """The adjacency as float32 safetensors, zlib-compressed: most of it is zeros (no edge runs backwards in
        depth or position), which compress away."""
        return zlib.compress(save_tensors({"adjacency": self.adjacency.float().contiguous()}), 6)

    @classmethod
    def from_stored(cls, data: dict[str, Any], adjacency: bytes) -> ReplacementGraph:
        """The graph `to_dict` and `adjacency_bytes` stored; ValueError for parts that do not fit together."""
        try:
            matrix = load_tensors(zlib.decompress(adjacency))["adjacency"]
        except (zlib.error, KeyError, ValueError) as err:
            raise ValueError(f"the stored adjacency is unreadable ({err})") from None
        columns = {name: torch.tensor(data[name], dtype=torch.float32 if name == "feature_activation" else torch.long)
                   for name in FEATURE_COLUMNS}
        graph = cls(token_ids=list(data["token_ids"]), n_layers=int(data["n_layers"]),
                    logit_tokens=list(data["logit_tokens"]),
                    logit_probabilities=torch.tensor(data["logit_probabilities"], dtype=torch.float32),
                    adjacency=matrix, active_features=int(data["active_features"]), **columns)
        if matrix.shape != (graph.layout.size, graph.layout.size):
            raise ValueError(f"the stored adjacency is {tuple(matrix.shape)} but the graph has {graph.layout.size} nodes")
        return graph


def logit_targets(rm: ReplacementModel, cfg: ReplacementConfig) -> tuple[list[int], torch.Tensor]:
    """The likeliest next tokens after the prompt until their probability passes the threshold (or the tokens
    picked), and their probabilities, which weigh each output's share of the influence."""
    probs = torch.softmax(rm.logits_TV[-1].double(), dim=-1)
    if cfg.targets:
        outside = [t for t in cfg.targets if not 0 <= t < len(probs)]
        if outside:
            raise AttributionError("targets", f"token id {outside[0]} is outside the vocabulary (0..{len(probs) - 1})")
        return list(cfg.targets), probs[list(cfg.targets)].float()
    ordered, tokens = probs.sort(descending=True)
    before = ordered.cumsum(0) - ordered
    n = max(1, min(cfg.max_logits, int((before < cfg.logit_probability).sum())))
    return tokens[:n].tolist(), ordered[:n].float()


def _rows(rm: ReplacementModel, targets: list[Target], sources: Sources, batch: int) -> torch.Tensor:
    return torch.cat([rm.edges_into(targets[i:i + batch], sources) for i in range(0, len(targets), batch)])


def _influence(logit_shares: torch.Tensor, probabilities: torch.Tensor, shares: dict[int, torch.Tensor],
               sources: Sources) -> torch.Tensor:
    """Each source's influence on the logits through the rows known so far (given as normalised shares). A
    feature's row holds sources of earlier layers only, so taking known features from the deepest layer up sums
    every path once."""
    total = probabilities @ logit_shares
    known = torch.tensor(sorted(shares), dtype=torch.long)
    for layer in sources.layer_S[known].unique().flip(0).tolist():
        here = known[sources.layer_S[known] == layer]
        total += total[here] @ torch.stack([shares[int(s)] for s in here])
    return total


def build_graph(rm: ReplacementModel, cfg: ReplacementConfig = ReplacementConfig(),
                progress: Callable[[float], None] = lambda _f: None) -> ReplacementGraph:
    """The prompt's graph: logit rows, then feature rows in order of influence, then the adjacency."""
    sources = rm.sources()
    n_layers, last = len(rm.transcoders), len(rm.ids_T) - 1
    tokens, probabilities = logit_targets(rm, cfg)
    logit_rows = _rows(rm, [Target(LOGIT, n_layers, last, t) for t in tokens], sources, cfg.batch_rows)
    logit_shares = normalized(logit_rows)
    is_feature = sources.kind_S == FEATURE
    rows: dict[int, torch.Tensor] = {}
    shares: dict[int, torch.Tensor] = {}
    budget = min(cfg.max_feature_nodes, int(is_feature.sum()))
    while len(rows) < budget:
        progress(len(rows) / max(budget, 1))
        score = _influence(logit_shares, probabilities, shares, sources)
        score[~is_feature] = -1
        score[list(rows)] = -1
        best = score.argsort(descending=True)[: min(cfg.batch_rows, budget - len(rows))]
        picked = best[score[best] > 0].tolist()
        if not picked:
            break
        targets = [Target(FEATURE, int(sources.layer_S[s]), int(sources.pos_S[s]), int(sources.feature_S[s]))
                   for s in picked]
        new_rows = _rows(rm, targets, sources, cfg.batch_rows)
        rows.update(zip(picked, new_rows, strict=True))
        shares.update(zip(picked, normalized(new_rows), strict=True))
    progress(1.0)
    selected = torch.tensor(sorted(rows), dtype=torch.long)
    columns = torch.cat([selected, (sources.kind_S == ERROR).nonzero()[:, 0], (sources.kind_S == EMBEDDING).nonzero()[:, 0]])
    size = len(columns) + len(tokens)
    adjacency = torch.zeros(size, size)
    if len(selected):
        adjacency[: len(selected), : len(columns)] = torch.stack([rows[int(s)] for s in selected])[:, columns]
    adjacency[len(columns):, : len(columns)] = logit_rows[:, columns]
    return ReplacementGraph(
        token_ids=rm.ids_T.tolist(), n_layers=n_layers, feature_layer=sources.layer_S[selected],
        feature_pos=sources.pos_S[selected], feature_index=sources.feature_S[selected],
        feature_activation=sources.value_S[selected], logit_tokens=tokens, logit_probabilities=probabilities,
        adjacency=adjacency, active_features=int(is_feature.sum()),
    )
