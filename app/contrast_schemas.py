"""Shapes of the contrast API: two sets of texts in, the features that separate them out."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from sae_core.contrast import MIN_TEXTS

from .deps import StoredText

MAX_TEXTS = 200
"""Texts per set: enough for a study, few enough to answer in seconds on a CPU."""

Text = Annotated[StoredText, Field(min_length=1, max_length=5000)]


class ContrastIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sae_id: int = Field(ge=1, lt=2**31)
    a: list[Text] = Field(min_length=MIN_TEXTS, max_length=MAX_TEXTS, description="Texts of set A.")
    b: list[Text] = Field(min_length=MIN_TEXTS, max_length=MAX_TEXTS, description="Texts of set B.")
    top: int = Field(20, ge=1, le=200, description="How many features to return, by size of effect.")


class FeatureContrastOut(BaseModel):
    feature: int
    label: str | None
    mean_a: float = Field(description="Mean over A's texts of the text's mean activation.")
    mean_b: float
    effect: float = Field(description="Cohen's d of A over B (positive: stronger in A), capped at +-10.")
    fired_a: float = Field(description="Fraction of A's texts the feature fires in.")
    fired_b: float
    url: str
    steer_url: str


class ContrastOut(BaseModel):
    sae_id: int
    n_a: int
    n_b: int
    tokens_a: int
    tokens_b: int
    features: list[FeatureContrastOut]
