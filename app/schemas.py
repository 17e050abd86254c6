"""Shapes of the JSON API (what /docs shows); crud's dataclasses serve as they are where they fit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from . import crud
from .deps import StoredText
from .models import Label


class SaeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    model_name: str
    site: str
    architecture: str
    d_in: int
    d_sae: int
    k: int | None
    dataset: str | None
    n_tokens: int | None
    recorded_at: datetime | None
    dead_count: int | None
    dense_count: int | None
    mean_l0: float | None
    eval_metrics: dict[str, Any]
    set_id: int | None
    """The set of SAEs of one model at several sites this SAE belongs to, if any."""


class SaeDetail(SaeOut):
    training_log: list[Any]
    density_histogram: dict[str, Any] | None
    labelled_count: int


class FeatureList(BaseModel):
    total: int | None = Field(description="How many features match; null for a text search and for a tag with "
                                          "another filter (counting would read every feature).")
    page: int
    per_page: int
    features: list[crud.FeatureRow]
    next: dict[str, str] | None = Field(None, description=(
        "The query parameters of the next page by key (after, and after_key or after_text), to add to this "
        "request's; null on the last page."))


class LabelOut(BaseModel):
    id: int
    feature_index: int
    text: str
    source: str
    author: str | None
    created_at: datetime

    @classmethod
    def of(cls, label: Label | Row[Any]) -> LabelOut:
        return cls(id=label.id, feature_index=label.feature_index, text=label.text, source=label.source,
                   author=label.author_name, created_at=label.created_at)


class FeatureOut(BaseModel):
    sae_id: int
    feature_index: int
    density: float
    fire_count: int
    max_act: float
    mean_act: float
    is_dead: bool
    is_dense: bool
    hist: dict[str, Any]
    promoted: list[Any] = Field(description="[token_id, text, logit], most promoted first")
    suppressed: list[Any] = Field(description="[token_id, text, logit], most suppressed first")
    neighbours: list[Any] = Field(description="[feature_index, cosine], nearest first")
    label: str | None
    labels: list[LabelOut] = Field(description="label history, newest first")
    tags: list[str]
    top: list[crud.ExampleView]
    quantiles: dict[int, list[crud.ExampleView]]

    @classmethod
    def of(cls, page: crud.FeaturePage) -> FeatureOut:
        f = page.feature
        return cls(sae_id=f.sae_id, feature_index=f.feature_index, density=f.density, fire_count=f.fire_count,
                   max_act=f.max_act, mean_act=f.mean_act, is_dead=f.is_dead, is_dense=f.is_dense, hist=f.hist,
                   promoted=f.promoted, suppressed=f.suppressed, neighbours=f.neighbours, label=page.label,
                   labels=[LabelOut.of(lab) for lab in page.labels], tags=page.tags,
                   top=page.top, quantiles=page.quantiles)


class LabelIn(BaseModel):
    text: StoredText = Field(min_length=1, max_length=2000)
    base_label_id: int | None = Field(None, description="id of the label this edit replaces; null if none. "
                                                        "A stale id gives 409 with the current label.")


class LabelConflictOut(BaseModel):
    detail: str
    current: LabelOut | None


class TokenActivation(BaseModel):
    token: str
    token_id: int
    activation: float


class FeatureActivations(BaseModel):
    feature_index: int
    tokens: list[TokenActivation]


class FiringFeature(BaseModel):
    index: int
    activation: float
    label: str | None


class NextToken(BaseModel):
    token: str
    probability: float


class SearchToken(BaseModel):
    token: str
    token_id: int
    features: list[FiringFeature]
    next_tokens: list[NextToken]


class SearchResult(BaseModel):
    tokens: list[SearchToken]


class ModelStatusOut(BaseModel):
    """Whether this server has the SAE's model loaded, for scripts that want to wait for it."""

    model: str
    """The spec the model loads from (as recorded, else the model name)."""
    phase: Literal["idle", "loading", "ready", "failed"]
    """idle: not asked for yet (the first run loads it); loading (or queued); ready; failed (see `error`)."""
    error: str
    loading_s: float
    """Seconds the load has taken so far (0 unless loading)."""


class BookmarkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    sae_id: int
    feature_index: int
    note: str


class BookmarkListOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    bookmarks: list[BookmarkOut]
