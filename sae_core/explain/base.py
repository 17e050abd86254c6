"""What the explainer and the scorers ask of a model, whichever serves it (an endpoint or a local LM)."""

from __future__ import annotations

from typing import Protocol

from .prompts import Messages


class ExplainerError(RuntimeError):
    """A model that cannot answer: an endpoint down or refusing, a local model that will not load."""


class ChatModel(Protocol):
    """A model that writes explanations and judges how well texts match one."""

    name: str
    """The model's name as stored with each explanation."""
    calibrated: bool
    """Whether `judge` answers in probabilities to take at their word (0.5 is the cut); False for a model whose
    judgements are only comparable with each other within one call."""

    def generate(self, conversations: list[Messages], max_tokens: int) -> list[str]:
        """Each conversation's answer, greedy (temperature 0), at most `max_tokens` tokens."""
        ...

    def judge(self, explanation: str, texts: list[str], marked: bool) -> list[float]:
        """How well each text matches the explanation, higher for a better match; with `marked`, whether the
        tokens marked << >> in it do."""
        ...
