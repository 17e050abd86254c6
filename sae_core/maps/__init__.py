"""The feature map: every feature of an SAE on one 2-D picture, grouped into clusters (no database)."""

from .clusters import ClusterSummary, summarise_clusters
from .config import MapConfig
from .layout import DEAD, NOISE, FeatureMap, MapError, map_features

__all__ = ["DEAD", "NOISE", "ClusterSummary", "FeatureMap", "MapConfig", "MapError", "map_features",
           "summarise_clusters"]
