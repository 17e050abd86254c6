"""A graph's largest nodes as a plain-text table, for the terminal."""

from __future__ import annotations

from .graph import AttributionGraph, GraphNode


def _where(graph: AttributionGraph, node: GraphNode) -> str:
    if node.kind == "embedding":
        return "embedding"
    site = graph.sites[node.layer]
    return f"{site} #{node.feature}" if node.kind == "feature" else f"{site} error"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


def node_table(graph: AttributionGraph, n: int = 20) -> str:
    """A header saying what was measured, then the n largest nodes with estimated and exact effects."""
    contrast = f" - logit({graph.contrast!r})" if graph.contrast is not None else ""
    header = [
        f"metric: {graph.metric} of {graph.target!r}{contrast} at position {graph.position} "
        f"= {graph.metric_value:.4f} ({graph.method}{f', {graph.steps} steps' if graph.steps else ''})",
        f"nodes: {graph.active_nodes}; Spearman (estimate vs exact, top {sum(x.exact is not None for x in graph.nodes)}): "
        + ("n/a" if graph.spearman is None else f"{graph.spearman:.3f}"),
    ]
    rows = [("rank", "node", "pos", "token", "activation", "estimate", "exact")]
    for rank, node in enumerate(graph.top(n), start=1):
        rows.append((str(rank), _where(graph, node), str(node.pos), repr(graph.tokens[node.pos]),
                     f"{node.activation:.3f}", _number(node.effect), _number(node.exact)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([*header, "", *lines])
