"""Influence on the output through a graph's direct effects, and what follows from it: circuit-tracer's pruning
and its replacement and completeness scores (Ameisen et al. 2025).

The adjacency A[target, source] holds direct effects; its rows normalised to absolute shares summing to 1 say
how much of each target comes from each source. A node's influence is the logit-probability-weighted sum of
those shares over every path to the logits: w @ (A + A^2 + ...), finite because the graph is acyclic.
Nodes are ordered features, errors, embeddings, logits (circuit-tracer's order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def normalized(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with each row divided by its sum (rows with nothing in stay zero)."""
    size = adjacency.abs()
    return size / size.sum(dim=-1, keepdim=True).clamp_min(1e-10)


def influence(matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """weights @ (M + M^2 + ...) for a nilpotent M (an acyclic graph's); refuses a graph with a cycle."""
    current = weights @ matrix
    total = current.clone()
    for _ in range(len(matrix)):
        if not current.any():
            return total
        current = current @ matrix
        total += current
    raise ValueError("the graph has a cycle: influence does not converge")


def threshold_for(scores: torch.Tensor, share: float) -> torch.Tensor:
    """The smallest score among the largest ones that together hold `share` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    index = min(int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype))), len(ordered) - 1)
    return ordered[index]


@dataclass(frozen=True)
class Layout:
    """How many nodes of each kind, in order: features, errors, embeddings, logits."""

    features: int
    errors: int
    embeddings: int
    logits: int

    @property
    def size(self) -> int:
        return self.features + self.errors + self.embeddings + self.logits

    @property
    def error_slice(self) -> slice:
        return slice(self.features, self.features + self.errors)

    @property
    def embedding_slice(self) -> slice:
        start = self.features + self.errors
        return slice(start, start + self.embeddings)


def logit_weights(layout: Layout, probabilities: torch.Tensor) -> torch.Tensor:
    """Each logit node's probability, zero elsewhere: what influence is measured against."""
    weights = torch.zeros(layout.size, dtype=probabilities.dtype)
    weights[-layout.logits:] = probabilities
    return weights


def node_influence(adjacency: torch.Tensor, layout: Layout, probabilities: torch.Tensor) -> torch.Tensor:
    return influence(normalized(adjacency), logit_weights(layout, probabilities))


@dataclass(frozen=True)
class Pruned:
    """What pruning keeps: nodes [N] and edges [N, N] (target, source)."""

    nodes: torch.Tensor
    edges: torch.Tensor
    cumulative: torch.Tensor
    """[N] share of all node influence held by the nodes at least as influential as each (what circuit-tracer
    exports as a node's influence, and what a node threshold is compared with)."""
    influence: torch.Tensor
    """[N] each node's influence on the logits (what the page sizes a node by)."""


def cumulative_shares(scores: torch.Tensor) -> torch.Tensor:
    """For each score, the share of the total held by it and every larger one."""
    ordered, order = scores.sort(descending=True)
    out = torch.zeros_like(scores)
    out[order] = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return out


def prune(adjacency: torch.Tensor, layout: Layout, probabilities: torch.Tensor, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> Pruned:
    """Keep the most influential nodes holding `node_threshold` of the influence (embeddings and logits always),
    then the edges holding `edge_threshold` of the edge influence among them; features and errors left
    without an edge out, and features without an edge in, are dropped until none is."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is {value}; it must be between 0 and 1")
    weights = logit_weights(layout, probabilities)
    scores = influence(normalized(adjacency), weights)
    keep = scores >= threshold_for(scores, node_threshold)
    fixed = layout.size - layout.logits - layout.embeddings
    keep[fixed:] = True
    within = adjacency * keep[:, None] * keep[None, :]
    shares = normalized(within)
    edge_scores = shares * (influence(shares, weights) + weights)[:, None]
    edges = (edge_scores >= threshold_for(edge_scores, edge_threshold)) & (within != 0)  # a zero is no edge
    while True:
        edges &= keep[:, None] & keep[None, :]
        still = keep.clone()
        still[:fixed] &= edges[:, :fixed].any(0)
        still[: layout.features] &= edges[: layout.features].any(1)
        if torch.equal(still, keep):
            return Pruned(keep, edges, cumulative_shares(scores), scores)
        keep = still


@dataclass(frozen=True)
class Scores:
    """How much of the output the graph explains through features rather than errors (both in [0, 1])."""

    replacement: float
    """Influence from embeddings over influence from embeddings and errors: paths that end in the input."""
    completeness: float
    """Share of every node's input not coming from errors, weighted by the node's influence on the output."""


def graph_scores(adjacency: torch.Tensor, layout: Layout, probabilities: torch.Tensor) -> Scores:
    """circuit-tracer's replacement and completeness scores of a graph."""
    shares = normalized(adjacency)
    weights = logit_weights(layout, probabilities)
    scores = influence(shares, weights)
    from_embeddings = scores[layout.embedding_slice].sum()
    from_errors = scores[layout.error_slice].sum()
    replacement = from_embeddings / (from_embeddings + from_errors).clamp_min(1e-30)
    not_error = 1 - shares[:, layout.error_slice].sum(-1)
    output = scores + weights
    completeness = (not_error * output).sum() / output.sum()
    return Scores(float(replacement), float(completeness))
