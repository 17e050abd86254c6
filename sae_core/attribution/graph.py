"""The result of one attribution run: nodes with estimated (and, for the largest, exact) effects, edges, and
the shares that prune them; plain data that round-trips through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("feature", "error", "embedding", "metric")


@dataclass(frozen=True)
class GraphNode:
    """One node as pages, tables and exports show it."""

    node_id: str
    kind: str
    """feature, error, embedding or metric."""
    layer: int
    """Index of the node's site in depth order; -1 for embeddings, the number of sites for the metric."""
    pos: int
    feature: int | None
    activation: float
    """A feature's activation; the norm of an error or embedding vector; the metric's clean value."""
    effect: float
    """Estimated metric(clean) - metric(node at baseline); the metric's own clean value for the metric node."""
    share: float
    """Share of the total |effect| held by larger nodes (prunes by node threshold)."""
    exact: float | None = None
    """The exactly ablated effect, for the nodes verified."""


@dataclass(frozen=True)
class GraphLink:
    """u -> d: u's effect on the metric through d."""

    source: str
    target: str
    weight: float
    share: float
    """Share of the total |weight| held by larger edges (prunes by edge threshold)."""


@dataclass(frozen=True)
class AttributionGraph:
    """What was asked, and what attribution found."""

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    target: str
    target_id: int
    contrast: str | None
    corrupted: str | None
    position: int
    metric: str
    """log-probability or logit difference."""
    metric_value: float
    """The metric on the clean prompt."""
    method: str
    steps: int
    sites: list[str]
    """Site names in depth order (the graph's rows)."""
    saes: list[str]
    """The name of each site's SAE (a store id or a directory)."""
    active_nodes: int
    """Every node considered, of which `nodes` holds the candidates, the verified and the embeddings."""
    layer_totals: list[float]
    """Sum of the estimated effects of all nodes per layer: embeddings, then each site."""
    next_tokens: list[tuple[str, float]]
    """The model's most likely next tokens at the position, with probabilities."""
    spearman: float | None
    """Rank agreement between estimated and exact effects of the verified nodes."""
    node_threshold: float
    edge_threshold: float
    nodes: list[GraphNode] = field(default_factory=list)
    links: list[GraphLink] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the store keeps and the API returns)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributionGraph:
        """Read back what `to_dict` wrote."""
        values = dict(data)
        values["nodes"] = [GraphNode(**n) for n in data["nodes"]]
        values["links"] = [GraphLink(**link) for link in data["links"]]
        values["next_tokens"] = [tuple(t) for t in data["next_tokens"]]
        return cls(**values)

    def top(self, n: int) -> list[GraphNode]:
        """The n nodes of largest |effect| (the metric node aside)."""
        ranked = sorted((x for x in self.nodes if x.kind in ("feature", "error", "embedding")),
                        key=lambda x: -abs(x.effect))
        return ranked[:n]

    def pruned(self, node_threshold: float | None = None,
               edge_threshold: float | None = None) -> tuple[list[GraphNode], list[GraphLink]]:
        """Nodes and links kept at the thresholds; features and errors left without an edge in or out are
        dropped, repeatedly, as in circuit-tracer. Embeddings and the metric always stay."""
        node_cut = self.node_threshold if node_threshold is None else node_threshold
        edge_cut = self.edge_threshold if edge_threshold is None else edge_threshold
        fixed = {n.node_id for n in self.nodes if n.kind in ("embedding", "metric")}
        keep = fixed | {n.node_id for n in self.nodes if n.share < node_cut}
        links = [link for link in self.links if link.share < edge_cut]
        while True:
            links = [link for link in links if link.source in keep and link.target in keep]
            has_out = {link.source for link in links}
            has_in = {link.target for link in links}
            still = fixed | {n for n in keep if n in has_out and n in has_in}
            if still == keep:
                return [n for n in self.nodes if n.node_id in keep], links
            keep = still
