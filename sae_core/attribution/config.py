"""What one attribution run is asked and how it computes: frozen, one docstring per field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["patching", "ig"]
METHODS: tuple[Method, ...] = ("patching", "ig")


class AttributionError(ValueError):
    """A request attribution cannot carry out; `field` names the input at fault (for a 422), the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_fields(config: object, checks: dict[str, tuple[bool, str]]) -> None:
    """Raise AttributionError for the first field whose check fails: {field: (ok, what is allowed)}."""
    for field, (ok, allowed) in checks.items():
        if not ok:
            raise AttributionError(field, f"{field} is {getattr(config, field)}; it must be {allowed}")


@dataclass(frozen=True)
class AttributionRequest:
    """The behaviour to explain: a prompt, the token it should predict, and what to compare against."""

    prompt: str
    """Raw text; the tokenizer's BOS is put in front, as when activations are harvested."""
    target: str
    """The predicted token whose log-probability (or logit difference) is the metric; must be one token."""
    contrast: str | None = None
    """With a contrast token the metric is logit(target) - logit(contrast) instead of log p(target)."""
    corrupted: str | None = None
    """A second prompt of the same token length to patch from; without it nodes are zero-ablated."""
    position: int | None = None
    """Token position whose next-token prediction is measured (0 = BOS); None: the last."""


@dataclass(frozen=True)
class AttributionConfig:
    """How attribution computes; the defaults follow Marks et al. (2024) and circuit-tracer."""

    method: Method = "patching"
    """patching: gradient x (clean - patch), one forward and backward; ig: integrated gradients per site."""
    steps: int = 10
    """Integrated-gradients steps (midpoint rule) per site; ignored by patching."""
    verify_top: int = 20
    """The largest estimated nodes re-measured by exact ablation (one forward each, batched)."""
    node_threshold: float = 0.8
    """Graph nodes: the fewest carrying this share of the total |effect| (circuit-tracer's default)."""
    edge_threshold: float = 0.98
    """Graph edges: the fewest carrying this share of the total |edge weight| (circuit-tracer's default)."""
    max_nodes: int = 64
    """Most feature and error nodes whose edges are computed (each costs one truncated forward and backward),
    shared equally by the sites."""
    max_tokens: int = 128
    """Longest prompt accepted, BOS included."""
    batch_rows: int = 16
    """Rows per batched forward in ablation and edge passes."""
    freeze_bos: bool = True
    """Hold the BOS position at its clean value, so it makes no nodes. Its activations are an attention sink,
    often a hundred times the others' norm; zero-ablating them knocks the model off its distribution, and their
    first-order estimates are then far from exact. On SmolLM2 they filled most of the top 20. circuit-tracer
    likewise zeroes BOS features."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AttributionError("method", f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        checks = {"steps": (self.steps >= 1, "at least 1"), "verify_top": (self.verify_top >= 0, "0 or more"),
                  "max_nodes": (self.max_nodes >= 1, "at least 1"), "max_tokens": (self.max_tokens >= 2, "at least 2"),
                  "batch_rows": (self.batch_rows >= 1, "at least 1"),
                  "node_threshold": (0 < self.node_threshold <= 1, "in (0, 1]"),
                  "edge_threshold": (0 < self.edge_threshold <= 1, "in (0, 1]")}
        check_fields(self, checks)
