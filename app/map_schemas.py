"""Shapes of the feature map's JSON API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MapPointOut(BaseModel):
    feature_index: int
    x: float
    y: float
    cluster: int | None = Field(description="null: in no cluster (HDBSCAN noise)")
    density: float
    label: str | None
    top_tokens: list[str]


class FeatureMapOut(BaseModel):
    sae_id: int
    config: dict[str, Any] = Field(description="UMAP and HDBSCAN settings and seed (sae_core.maps.MapConfig)")
    n_clusters: int
    n_noise: int = Field(description="live features in no cluster")
    n_dead: int = Field(description="dead features, left off the map")
    seconds: float
    created_at: datetime
    points: list[MapPointOut] = Field(description="every live feature, by index")


class ClusterOut(BaseModel):
    cluster: int
    size: int
    x: float
    y: float
    top_tokens: list[Any] = Field(description="[text, members having it among their top tokens], most common first")
    label: str | None


class ClusterLabelOut(BaseModel):
    id: int
    text: str
    author: str | None
    created_at: datetime


class ClusterMemberOut(BaseModel):
    feature_index: int
    density: float
    max_act: float
    label: str | None
    top_text: str


class ClusterDetailOut(ClusterOut):
    labels: list[ClusterLabelOut] = Field(description="label history, newest first")
    members: list[ClusterMemberOut]


class SelectionOut(BaseModel):
    added: int
    target: str
