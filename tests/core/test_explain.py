"""Draft explanations, the parts that need no model: prompts, the split, balanced accuracy, fuzzing, decisions."""

from __future__ import annotations

import random

import pytest

from sae_core.explain import ExplainConfig, FeatureEvidence, Window, balanced_accuracy, score, split
from sae_core.explain.prompts import clean_explanation, explainer_messages, marked_text
from sae_core.explain.scoring import decide, fuzzed


def window(text: str, hot: str = "") -> Window:
    tokens = text.split(" ")
    tokens = [t + " " for t in tokens[:-1]] + tokens[-1:]
    return Window(tokens, [1.0 if hot and t.strip() == hot else 0.0 for t in tokens])


def test_marked_text_wraps_each_run_of_marked_tokens():
    assert marked_text(["a", "b", "c", "d"], [1, 2]) == "a<<bc>>d"
    assert marked_text(["a", "b", "c"], [0, 2]) == "<<a>>b<<c>>"


def test_explainer_prompt_shows_marks_common_tokens_and_promoted_tokens():
    messages = explainer_messages([window("call 1 and 2", "1"), window("call 1 now", "1")], ["ly", " x"])
    user = messages[-1]["content"]
    assert "Example 1: call <<1 >>and 2" in user and "Tokens marked most often: '1'" in user
    assert "makes more likely next: 'ly', 'x'" in user


def test_clean_explanation_keeps_the_first_line_without_quotes_or_prefix():
    assert clean_explanation('\n"Description: digits in dates."\nmore') == "digits in dates"
    assert clean_explanation("   ") == ""


@pytest.mark.parametrize(("tp", "fn", "tn", "fp", "expected"), [(10, 0, 10, 0, 1.0), (5, 5, 5, 5, 0.5), (10, 0, 0, 10, 0.5),
                                                                 (8, 2, 6, 4, 0.7)])
def test_balanced_accuracy_is_the_mean_of_the_two_rates(tp, fn, tn, fp, expected):
    truth = [True] * (tp + fn) + [False] * (tn + fp)
    said = [True] * tp + [False] * fn + [False] * tn + [True] * fp
    found = balanced_accuracy(truth, said)
    assert found.accuracy == pytest.approx(expected)
    assert found.low <= found.accuracy <= found.high and found.low >= 0 and found.high <= 1
    assert (found.n_positive, found.n_negative) == (tp + fn, tn + fp)


def test_the_interval_narrows_as_contexts_are_added_and_stays_open_at_a_perfect_score():
    small = balanced_accuracy([True] * 5 + [False] * 5, [True] * 5 + [False] * 5)
    large = balanced_accuracy([True] * 50 + [False] * 50, [True] * 50 + [False] * 50)
    assert small.low < large.low < 1.0 and small.high == large.high == 1.0


def test_balanced_accuracy_refuses_a_set_without_both_kinds():
    with pytest.raises(ValueError, match="both"):
        balanced_accuracy([True, True], [True, False])


class Calibrated:
    calibrated = True


class Uncalibrated:
    calibrated = False


def test_decide_cuts_at_one_half_or_at_the_median():
    assert decide(Calibrated(), [0.9, 0.6, 0.4, 0.5]) == [True, True, False, False]
    assert decide(Uncalibrated(), [-3.0, -1.0, -2.0, -4.0]) == [False, True, True, False]


def evidence(n_top=12, per_interval=4, intervals=3) -> FeatureEvidence:
    top = [window(f"top n{n} 7 x", "7") for n in range(n_top)]
    sampled = {i: [window(f"q{i} n{n} 7 y", "7") for n in range(per_interval)] for i in range(intervals)}
    quiet = [window(f"quiet {chr(97 + n)} words here") for n in range(8)]
    return FeatureEvidence(3, top, sampled, ["z"], quiet[:4], quiet[4:])


def test_split_shows_top_and_high_interval_examples_and_holds_out_the_rest_across_intervals():
    found = split(evidence(), ExplainConfig(n_shown_top=6, n_shown_sampled=2, n_activating=10))
    shown = [w.text for w in found.shown]
    held = [w.text for w in found.held_out]
    assert shown[:6] == [f"top n{n} 7 x" for n in range(6)] and shown[6:] == ["q2 n0 7 y", "q1 n0 7 y"]
    assert not set(shown) & set(held) and len(held) == 10
    assert {t.split()[0] for t in held} == {"q2", "q1", "q0", "top"}  # every interval and the left-over top examples


def test_split_trims_windows_round_their_peak():
    long = Window([f"t{i} " for i in range(40)], [0.0] * 30 + [2.0] + [0.0] * 9)
    found = split(FeatureEvidence(0, [long], {}, []), ExplainConfig(before=3, after=2))
    assert found.shown[0].tokens == ["t27 ", "t28 ", "t29 ", "t30 ", "t31 ", "t32 "]


def test_fuzzing_marks_half_correctly_and_half_at_tokens_that_do_not_fire():
    windows = [window(f"a b 7 c d n{n}", "7") for n in range(10)]
    texts, correct = fuzzed(windows, random.Random(0))
    assert sum(correct) == 5 and len(texts) == 10
    for text, right in zip(texts, correct):
        assert ("<<7 >>" in text) == right and text.count("<<") == 1


class Oracle:
    """A scorer double that knows the truth: a text matches "sevens" iff it shows a 7 (or a marked 7)."""

    name = "oracle"
    calibrated = True

    def generate(self, conversations, max_tokens):
        return ["sevens"] * len(conversations)

    def judge(self, explanation, texts, marked):
        if explanation != "sevens":
            return [0.0] * len(texts)
        return [float(("<<7" in t) if marked else ("7" in t)) for t in texts]


def test_a_right_explanation_scores_one_and_a_wrong_one_one_half_with_an_oracle_scorer():
    right = score(Oracle(), "sevens", evidence(), ExplainConfig())
    wrong = score(Oracle(), "cats", evidence(), ExplainConfig())
    assert right[0].accuracy == 1.0 and right[1].accuracy == 1.0
    assert wrong[0].accuracy == 0.5 and wrong[1].accuracy == 0.5
    assert right[0].n_positive == 10 and right[0].n_negative == 8


def test_a_feature_without_negatives_or_held_out_examples_is_not_scored():
    bare = FeatureEvidence(0, [window("a 7 b", "7")] * 2, {}, [])
    assert score(Oracle(), "sevens", bare, ExplainConfig(n_shown_top=1)) == (None, None)
