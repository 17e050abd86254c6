"""One feature from evidence to a scored draft: choose what the explainer sees, ask it, score on the rest."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .base import ChatModel, ExplainerError
from .prompts import PROMPT_VERSION, Window, clean_explanation, explainer_messages
from .scoring import Score, detection, fuzzing


@dataclass(frozen=True)
class ExplainConfig:
    """How much evidence the explainer sees and how much the scorers hold out."""

    n_shown_top: int = 6
    """Top examples shown to the explainer (the rest of the top examples are held out)."""
    n_shown_sampled: int = 2
    """Quantile-sampled examples shown, one from each of the highest intervals that have one."""
    n_activating: int = 10
    """Held-out activating contexts per scorer, drawn across the quantile intervals."""
    n_random: int = 5
    """Non-activating contexts drawn at random for detection."""
    n_hard: int = 5
    """Non-activating contexts of the nearest features for detection (hard negatives)."""
    before: int = 12
    """Tokens kept before a window's peak in every prompt (Window.trimmed)."""
    after: int = 4
    """Tokens kept after it."""
    max_tokens: int = 32
    """Longest explanation the explainer may write, in tokens."""
    seed: int = 0


@dataclass(frozen=True)
class FeatureEvidence:
    """What the store knows of a feature that an explanation can draw on."""

    index: int
    top: list[Window]
    """Top-activating windows, highest first."""
    sampled: dict[int, list[Window]]
    """Quantile samples by interval (0 lowest)."""
    promoted: list[str]
    """Tokens the feature promotes most, strongest first."""
    random_negatives: list[Window] = field(default_factory=list)
    """Contexts where the feature is not recorded firing, drawn at random."""
    hard_negatives: list[Window] = field(default_factory=list)
    """Contexts of its nearest features where it is not recorded firing."""


@dataclass(frozen=True)
class Split:
    """The examples shown to the explainer and those held out for the scorers."""

    shown: list[Window]
    held_out: list[Window]


def split(evidence: FeatureEvidence, config: ExplainConfig) -> Split:
    """Show the first top examples and one sample from each high interval; hold out up to n_activating of the
    rest, spread round-robin across intervals (high to low, then the left-over top examples) so the scorers
    see the whole activation range."""
    intervals = sorted(evidence.sampled, reverse=True)
    shown_sampled = [evidence.sampled[i][0] for i in intervals[:config.n_shown_sampled]]
    pools = [list(evidence.sampled[i][1 if n < config.n_shown_sampled else 0:]) for n, i in enumerate(intervals)]
    pools.append(list(evidence.top[config.n_shown_top:]))
    held: list[Window] = []
    while len(held) < config.n_activating and any(pools):
        for pool in pools:
            if pool and len(held) < config.n_activating:
                held.append(pool.pop(0))
    cut = [w.trimmed(config.before, config.after) for w in evidence.top[:config.n_shown_top] + shown_sampled + held]
    n_shown = min(len(evidence.top), config.n_shown_top) + len(shown_sampled)
    return Split(cut[:n_shown], cut[n_shown:])


@dataclass(frozen=True)
class Explanation:
    """A draft explanation with its scores and what produced them."""

    feature_index: int
    text: str
    explainer_model: str
    scorer_model: str
    prompt_version: str
    detection: Score | None
    fuzzing: Score | None

    @property
    def scores(self) -> dict[str, Any]:
        return {name: score.as_dict() for name, score in (("detection", self.detection), ("fuzzing", self.fuzzing))
                if score is not None}


def explain(model: ChatModel, evidence: FeatureEvidence, config: ExplainConfig) -> str:
    """The explainer's draft for a feature, from the examples `split` shows it."""
    shown = split(evidence, config).shown
    if not shown:
        raise ExplainerError(f"feature {evidence.index} has no recorded examples to explain")
    answer = model.generate([explainer_messages(shown, evidence.promoted)], config.max_tokens)[0]
    text = clean_explanation(answer)
    if not text:
        raise ExplainerError(f"{model.name} wrote an empty explanation for feature {evidence.index}: {answer!r}")
    return text


def score(scorer: ChatModel, text: str, evidence: FeatureEvidence, config: ExplainConfig
          ) -> tuple[Score | None, Score | None]:
    """Detection and fuzzing scores of any explanation (a draft or a human label) on the held-out examples;
    None for a scorer that lacks the items it needs (no held-out examples, no negatives)."""
    held = split(evidence, config).held_out
    rng = random.Random(config.seed * 1_000_003 + evidence.index)
    negatives = [w.trimmed(config.before, config.after) for w in
                 rng.sample(evidence.random_negatives, min(config.n_random, len(evidence.random_negatives)))
                 + rng.sample(evidence.hard_negatives, min(config.n_hard, len(evidence.hard_negatives)))]
    found = detection(scorer, text, held, negatives) if held and negatives else None
    fuzz_ready = sum(1 for w in held if w.marked and len(w.marked) < len(w.tokens)) >= 2
    return found, fuzzing(scorer, text, held, seed=config.seed + evidence.index) if fuzz_ready else None


def explain_and_score(explainer: ChatModel, scorer: ChatModel, evidence: FeatureEvidence,
                      config: ExplainConfig) -> Explanation:
    """Draft an explanation for one feature and score it on examples the explainer did not see."""
    text = explain(explainer, evidence, config)
    found, fuzz = score(scorer, text, evidence, config)
    return Explanation(evidence.index, text, explainer.name, scorer.name, PROMPT_VERSION, found, fuzz)
