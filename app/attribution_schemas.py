"""Shapes of the attribution API: what a script or the circuits page's form asks, and what comes back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from sae_core.attribution import AttributionConfig, AttributionError, AttributionRequest, Method
from sae_core.attribution.replacement_graph import ReplacementConfig

from .deps import StoredText

DEFAULTS = AttributionConfig()
REPLACEMENT = ReplacementConfig()
NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98
"""circuit-tracer's default pruning of a replacement graph."""


class AttributionIn(BaseModel):
    """One attribution run on a set of SAEs (one per site of one model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sae_set: str = Field(min_length=1, max_length=200, description="The set of SAEs, by id or name.")
    prompt: StoredText = Field(min_length=1, max_length=4000)
    target: StoredText = Field(min_length=1, max_length=200, description="The predicted token (exactly one token).")
    contrast: StoredText | None = Field(None, max_length=200,
                                        description="Measure logit(target) - logit(contrast) instead of log p(target).")
    corrupted: StoredText | None = Field(None, max_length=4000,
                                         description="A same-length prompt to patch from; default zero-ablation.")
    position: int | None = Field(None, ge=0, lt=2**31, description="Position measured; default the last.")
    method: Method = DEFAULTS.method
    steps: int = Field(DEFAULTS.steps, ge=1, le=64, description="Integrated-gradients steps.")
    verify_top: int = Field(DEFAULTS.verify_top, ge=0, le=100, description="Top nodes re-measured by ablation.")
    node_threshold: float = Field(DEFAULTS.node_threshold, gt=0, le=1)
    edge_threshold: float = Field(DEFAULTS.edge_threshold, gt=0, le=1)
    max_nodes: int = Field(DEFAULTS.max_nodes, ge=1, le=256, description="Nodes whose edges are computed.")

    def request(self) -> AttributionRequest:
        return AttributionRequest(self.prompt, self.target, _given(self.contrast), _given(self.corrupted),
                                  self.position)

    def config(self) -> AttributionConfig:
        return AttributionConfig(method=self.method, steps=self.steps, verify_top=self.verify_top,
                                 node_threshold=self.node_threshold, edge_threshold=self.edge_threshold,
                                 max_nodes=self.max_nodes)


class ReplacementIn(BaseModel):
    """A replacement-model graph of a prompt on a set of transcoders, one per layer of the model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sae_set: str = Field(min_length=1, max_length=200, description="The set of transcoders, by id or name.")
    prompt: StoredText = Field(min_length=1, max_length=4000)
    max_feature_nodes: int = Field(REPLACEMENT.max_feature_nodes, ge=0, le=1024,
                                   description="Most features whose incoming edges are computed.")
    max_logits: int = Field(REPLACEMENT.max_logits, ge=1, le=20, description="Most output tokens in the graph.")
    logit_probability: float = Field(REPLACEMENT.logit_probability, gt=0, le=1,
                                     description="Output tokens are the likeliest until their probabilities add to this.")
    node_threshold: float = Field(NODE_THRESHOLD, gt=0, le=1, description="Share of node influence the page keeps.")
    edge_threshold: float = Field(EDGE_THRESHOLD, gt=0, le=1, description="Share of edge influence the page keeps.")
    targets: list[Annotated[StoredText, Field(min_length=1, max_length=200)]] = Field(
        [], max_length=20, description="Output tokens to explain (each exactly one token) instead of the likeliest.")
    target: StoredText | None = Field(None, max_length=200, description="One output token to explain (the page's "
                                                                       "form); joins `targets`.")

    def config(self) -> ReplacementConfig:
        return ReplacementConfig(max_logits=self.max_logits, logit_probability=self.logit_probability,
                                 max_feature_nodes=self.max_feature_nodes)

    def target_texts(self) -> list[str]:
        """The picked output tokens, each once, in the order given."""
        return list(dict.fromkeys([*self.targets, *([self.target] if self.target else [])]))


class PinsIn(BaseModel):
    """Features of a replacement graph set to values, and the model rerun on the graph's prompt."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    pins: str = Field(min_length=1, max_length=4000, pattern=r"^\d+_\d+_\d+(,\d+_\d+_\d+)*$",
                      description="Feature node ids LAYER_FEATURE_POSITION, comma-separated.")
    value: float = Field(0.0, ge=-1e4, le=1e4, description="The value every pinned feature is set to.")
    attention: Literal["frozen", "live"] = Field("frozen", description="frozen: attention patterns and norm scales "
                                                 "stay at the prompt's; live: the model recomputes them.")

    def pinned(self) -> dict[tuple[int, int, int], float]:
        """{(layer, position, feature): value}."""
        found = {}
        for node in self.pins.split(","):
            layer, feature, pos = (int(part) for part in node.split("_"))
            found[(layer, pos, feature)] = self.value
        return found


def _given(text: str | None) -> str | None:
    """An empty form box means "none"."""
    return text or None


class AttributionOut(BaseModel):
    """A saved graph: its id, its page and the graph itself (sae_core.attribution.AttributionGraph)."""

    id: int
    url: str
    graph: dict[str, Any]


def as_422(err: AttributionError) -> RequestValidationError:
    """An attribution error as the API's 422, naming the field at fault."""
    field = "sae_set" if err.field == "sae" else err.field
    return RequestValidationError([{"loc": ("body", field), "msg": str(err), "type": "value_error"}])


def circuits_url(set_id: int) -> str:
    """The circuits page of a set."""
    return f"/saes/{set_id}/circuits"


def graph_url(set_id: int, graph_id: int) -> str:
    """A graph's permalink."""
    return f"{circuits_url(set_id)}/{graph_id}"
