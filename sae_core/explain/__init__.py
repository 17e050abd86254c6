"""Draft explanations of SAE features: an explainer model writes them, scorers measure them (issue 17).

The package knows nothing of the store: callers hand it each feature's evidence (FeatureEvidence) and get back
scored drafts (Explanation); app/explanations.py is the bridge from rows.
"""

from .base import ChatModel, ExplainerError
from .endpoint import EndpointChatModel, EndpointConfig
from .explainer import ExplainConfig, Explanation, FeatureEvidence, explain, explain_and_score, score, split
from .local import LocalChatModel
from .prompts import PROMPT_VERSION, Window
from .scoring import Score, balanced_accuracy

__all__ = [
    "PROMPT_VERSION", "ChatModel", "EndpointChatModel", "EndpointConfig", "ExplainConfig", "ExplainerError",
    "Explanation", "FeatureEvidence", "LocalChatModel", "Score", "Window", "balanced_accuracy", "explain",
    "explain_and_score", "score", "split",
]
