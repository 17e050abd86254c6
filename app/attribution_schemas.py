"""Shapes of the attribution API: what a script or the circuits page's form asks, and what comes back."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from sae_core.attribution import AttributionConfig, AttributionError, AttributionRequest, Method

from .deps import StoredText

DEFAULTS = AttributionConfig()


class AttributionIn(BaseModel):
    """One attribution run on a set of SAEs (one per site of one model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sae_set: str = Field(min_length=1, max_length=200, pattern=r"^\d+(,\d+)*$",
                         description="The SAE set: store ids of its SAEs joined by commas, e.g. 1,2,3.")
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


def graph_url(set_key: str, graph_id: int) -> str:
    """A graph's permalink."""
    return f"/saes/{set_key}/circuits/{graph_id}"
