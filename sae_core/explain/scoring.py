"""Scorers: how well an explanation predicts where a feature fires, on examples the explainer did not see.

Detection (Bills et al. 2023; delphi): the scorer reads unmarked contexts, activating and not, and says which
contain what the explanation describes. Fuzzing (delphi): it reads activating contexts with tokens marked,
some at the real activating tokens and some at random ones, and says whether the marks fit. Both report
balanced accuracy, the mean of the rates on activating and non-activating items, so a scorer that says Yes
to everything scores 0.5 whatever the mix.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from .base import ChatModel
from .prompts import Window, marked_text

Z95 = 1.959964


@dataclass(frozen=True)
class Score:
    """A balanced accuracy with its 95% interval and the counts it came from."""

    accuracy: float
    low: float
    high: float
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def balanced_accuracy(truth: list[bool], said_yes: list[bool]) -> Score:
    """Balanced accuracy with a Wald interval on the two rates, each shrunk by one success and one failure
    (Agresti-Caffo), so a perfect score on a few items still has a width that says how few."""
    pos = [y for t, y in zip(truth, said_yes) if t]
    neg = [not y for t, y in zip(truth, said_yes) if not t]
    if not pos or not neg:
        raise ValueError("balanced accuracy needs both activating and non-activating items")
    tpr, tnr = sum(pos) / len(pos), sum(neg) / len(neg)
    tpr_s, tnr_s = (sum(pos) + 1) / (len(pos) + 2), (sum(neg) + 1) / (len(neg) + 2)
    half = Z95 * 0.5 * math.sqrt(tpr_s * (1 - tpr_s) / (len(pos) + 2) + tnr_s * (1 - tnr_s) / (len(neg) + 2))
    accuracy = (tpr + tnr) / 2
    return Score(accuracy, max(0.0, accuracy - half), min(1.0, accuracy + half), len(pos), len(neg))


def decide(model: ChatModel, judgements: list[float]) -> list[bool]:
    """Yes or No from each judgement: above 0.5 for a calibrated model, else above the median of the set.

    Every scored set is about half activating by construction, so for an uncalibrated model the median cut
    calls the half it rates highest Yes: its ordering of the texts is judged, not the scale of its numbers.
    """
    cut = 0.5 if model.calibrated else statistics.median(judgements)
    return [j > cut for j in judgements]


def detection(model: ChatModel, explanation: str, activating: list[Window], others: list[Window]) -> Score:
    """Which of the contexts, activating and not, does the scorer say match the explanation?"""
    judgements = model.judge(explanation, [w.text for w in activating + others], marked=False)
    return balanced_accuracy([True] * len(activating) + [False] * len(others), decide(model, judgements))


def fuzzed(windows: list[Window], rng: random.Random) -> tuple[list[str], list[bool]]:
    """Each window's text with marks: half (alternating after a shuffle) at its activating tokens, the others
    at as many random tokens that do not fire. Windows with nothing to mark or no room to misplace are left out."""
    usable = [w for w in windows if w.marked and len(w.marked) < len(w.tokens)]
    rng.shuffle(usable)
    texts, correct = [], []
    for n, window in enumerate(usable):
        right = n % 2 == 0
        quiet = [i for i in range(len(window.tokens)) if i not in set(window.marked)]
        positions = window.marked if right else rng.sample(quiet, min(len(window.marked), len(quiet)))
        texts.append(marked_text(window.tokens, positions))
        correct.append(right)
    return texts, correct


def fuzzing(model: ChatModel, explanation: str, windows: list[Window], seed: int = 0) -> Score:
    """Does the scorer tell correctly marked contexts from wrongly marked ones, given the explanation?"""
    texts, correct = fuzzed(windows, random.Random(seed))
    return balanced_accuracy(correct, decide(model, model.judge(explanation, texts, marked=True)))
