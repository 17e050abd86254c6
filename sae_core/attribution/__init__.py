"""Attribution from a behaviour (a target token) back to SAE features at several sites, with error nodes,
checked by exact ablation, with edges between consecutive sites (Marks et al. 2024, Sparse Feature Circuits;
pruning as circuit-tracer's)."""

from .config import METHODS, AttributionConfig, AttributionError, AttributionRequest, Method
from .dictionaries import Dictionary, dictionaries
from .graph import AttributionGraph, GraphLink, GraphNode
from .inputs import next_tokens
from .neuronpedia import neuronpedia_graph
from .run import Progress, attribute

__all__ = [
    "METHODS", "AttributionConfig", "AttributionError", "AttributionGraph", "AttributionRequest", "Dictionary",
    "GraphLink", "GraphNode", "Method", "Progress", "attribute", "dictionaries", "neuronpedia_graph", "next_tokens",
]
