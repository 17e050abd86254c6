"""Draft explanations with the real built-in SmolLM2 as explainer and scorer (no network): the scorer's own
reliability is measured on a feature built to fire exactly on digit tokens of the demo corpus."""

from __future__ import annotations

import itertools

import pytest

from sae_core.data import demo_documents
from sae_core.explain import ExplainConfig, FeatureEvidence, LocalChatModel, Window, explain_and_score, score

pytestmark = pytest.mark.smollm2

WINDOW = 33


def digit_feature(tokenizer, n_docs: int = 300) -> FeatureEvidence:
    """Windows of the demo corpus with activation 1 on every all-digit token: those with digits are the feature's
    examples (top and four quantile intervals), those without are its negatives."""
    firing, quiet = [], []
    for doc in itertools.islice(demo_documents(), n_docs):
        ids = tokenizer.encode(doc, add_special_tokens=False)
        for start in range(0, len(ids) - WINDOW, WINDOW):
            pieces = [tokenizer.decode([i]) for i in ids[start:start + WINDOW]]
            window = Window(pieces, [1.0 if p.strip().isdigit() else 0.0 for p in pieces])
            (firing if any(window.acts) else quiet).append(window)
    firing, quiet = firing[::max(1, len(firing) // 60)], quiet[::max(1, len(quiet) // 40)]
    return FeatureEvidence(0, top=firing[:20], sampled={i: firing[20 + 10 * i:30 + 10 * i] for i in range(4)},
                           promoted=[], random_negatives=quiet[:20], hard_negatives=quiet[20:40])


CONFIG = ExplainConfig(n_activating=30, n_random=15, n_hard=15)


@pytest.fixture(scope="module")
def local(smollm2):
    return LocalChatModel(smollm2)


def test_the_scorer_ranks_digits_above_animals_on_a_digit_feature(local):
    evidence = digit_feature(local.lm.tokenizer)
    digits, _ = score(local, "digits", evidence, CONFIG)
    animals, _ = score(local, "animals", evidence, CONFIG)
    print(f"detection: digits {digits.accuracy:.3f} [{digits.low:.2f}, {digits.high:.2f}], "
          f"animals {animals.accuracy:.3f} [{animals.low:.2f}, {animals.high:.2f}] ({digits.n_positive}+{digits.n_negative})")
    assert digits.accuracy > animals.accuracy


def test_the_local_model_drafts_and_scores_a_feature_offline(local):
    drafted = explain_and_score(local, local, digit_feature(local.lm.tokenizer, n_docs=60),
                                ExplainConfig(n_activating=6, n_random=3, n_hard=3))
    assert drafted.text and len(drafted.text) <= 200
    assert drafted.explainer_model == drafted.scorer_model == "SmolLM2-135M-Instruct"
    assert drafted.detection is not None and 0 <= drafted.detection.accuracy <= 1
