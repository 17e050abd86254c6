"""Each steering row's measures checked against direct computations on a tiny model, and sweeps."""

import math

import pytest
import torch

from sae_core import steering_measures
from sae_core.generation import Generation, Sampling
from sae_core.lm import LoadedModel
from sae_core.steering import Intervention, Steering, generate_steered, steer
from sae_core.steering_measures import (
    RowMeasures,
    SweepPoint,
    keep_logp,
    measure_rows,
    strongest_within,
    sweep,
    touched_features,
)
from tests.core.test_steering import GREEDY, PROMPT, SAMPLED, active_feature, make_sae, site_acts
from tests.factories import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")


@pytest.fixture(scope="module", params=["topk", "jumprelu"])
def sae(request):
    return make_sae(request.param)


def direct(lm, sae, run, tokens: list[int], features: list[int]) -> tuple[float, list[float], list[float]]:
    """(perplexity, per-token KL, mean activation of each feature) of one row, computed plainly."""
    ids = torch.tensor([PROMPT + tokens])
    logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, len(PROMPT) - 1:-1], -1)
    nll = -logp.gather(-1, torch.tensor(tokens)[:, None]).mean()
    with steer(lm.model, sae, [run], len(PROMPT)):
        steered = torch.log_softmax(lm.model(input_ids=ids).logits[0, len(PROMPT) - 1:-1], -1)
    kl = (logp.exp() * (logp - steered)).sum(-1) if run else torch.zeros(len(tokens))
    f_TF = sae.encode(site_acts(lm, PROMPT + tokens))[len(PROMPT):]
    return math.exp(float(nll)), kl.tolist(), f_TF[:, features].mean(0).tolist()


@pytest.mark.parametrize("kept", [True, False], ids=["generation kept its distributions", "steered forward"])
def test_every_row_measures_what_a_direct_computation_gives(lm, sae, kept):
    feature = active_feature(lm, sae)
    runs = [None, Steering((Intervention(feature, "clamp", 40.0),)), Steering((Intervention(3, "add", 30.0),))]
    generations = generate_steered(lm, sae, PROMPT, runs, SAMPLED, keep_logp=kept)
    assert all((g.logp is not None) == kept for g in generations)
    measures = measure_rows(lm, sae, PROMPT, runs, generations)
    features = touched_features(runs)
    assert features == sorted({feature, 3})
    for run, g, m in zip(runs, generations, measures):
        perplexity, kl, means = direct(lm, sae, run, g.token_ids, features)
        assert m.perplexity == pytest.approx(perplexity, rel=1e-4)
        assert list(m.kl_tokens) == pytest.approx(kl, abs=1e-5)
        assert [e.mean for e in m.effects] == pytest.approx(means, abs=1e-4)
        assert [e.feature for e in m.effects] == features and all(0 <= e.fired <= 1 for e in m.effects)
    assert measures[0].kl == 0.0 and measures[1].kl > 0 and measures[2].kl > 0


def test_a_generation_keeps_its_distributions_only_within_the_budget(lm, monkeypatch):
    vocab = lm.model.config.vocab_size
    assert keep_logp(lm, 3, Sampling(8))
    monkeypatch.setattr(steering_measures, "KEPT_LOGP_BUDGET", 3 * 8 * vocab - 1)
    assert not keep_logp(lm, 3, Sampling(8)) and keep_logp(lm, 3, Sampling(7))


def test_measuring_in_chunks_of_padded_rows_changes_nothing(lm, sae, monkeypatch):
    runs = [None, Steering((Intervention(3, "add", 30.0),)), Steering((Intervention(5, "scale", 0.0),))]
    generations = [Generation(g.token_ids[:n], g.text, g.finished) for g, n in
                   zip(generate_steered(lm, sae, PROMPT, runs, SAMPLED), (12, 3, 7))]
    whole = measure_rows(lm, sae, PROMPT, runs, generations, target_ids=[70, 71])
    monkeypatch.setattr(steering_measures, "LOGIT_BUDGET", 1)
    chunked = measure_rows(lm, sae, PROMPT, runs, generations, target_ids=[70, 71])
    for a, b in zip(whole, chunked):
        assert a.perplexity == pytest.approx(b.perplexity, rel=1e-5)
        assert a.kl_tokens == pytest.approx(b.kl_tokens, abs=1e-6)
        assert len(a.kl_tokens) == len(b.kl_tokens)
        assert a.target_logprob == pytest.approx(b.target_logprob, abs=1e-5)


def test_an_empty_continuation_has_no_perplexity():
    lm_ = LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")
    sae = make_sae("relu")
    m = measure_rows(lm_, sae, PROMPT, [None], [Generation([], "", None)])[0]
    assert m == RowMeasures((), None, (), None)


def test_sweep_measures_growing_effect_with_strength(lm, sae):
    feature = active_feature(lm, sae)
    points = sweep(lm, sae, PROMPT, Steering((Intervention(feature, "add"),)), [0.0, 10.0, 60.0],
                   GREEDY, target="hello")
    assert [p.strength for p in points] == [None, 0.0, 10.0, 60.0]
    assert points[0].measures.kl == 0.0
    assert points[1].measures.kl == pytest.approx(0.0, abs=1e-6)
    assert points[1].generation.token_ids == points[0].generation.token_ids
    assert points[1].measures.perplexity == pytest.approx(points[0].measures.perplexity, rel=1e-5)
    assert points[3].measures.kl > 0
    target = lm.tokenizer("hello", add_special_tokens=False).input_ids
    logp = torch.log_softmax(lm.model(input_ids=torch.tensor([PROMPT + target[:-1]])).logits[0], -1)
    expected = sum(logp[len(PROMPT) - 1 + j, t] for j, t in enumerate(target))
    assert points[0].measures.target_logprob == pytest.approx(float(expected), abs=1e-4)
    assert points[3].measures.target_logprob != pytest.approx(points[0].measures.target_logprob, abs=1e-3)


def point(strength, perplexity) -> SweepPoint:
    return SweepPoint(strength, Generation([], "", None), RowMeasures((), perplexity, (), None))


def test_the_strongest_fluent_strength_is_the_largest_in_size_within_the_factor():
    points = [point(None, 10.0), point(2.0, 12.0), point(-8.0, 19.0), point(16.0, 45.0), point(4.0, 15.0)]
    assert strongest_within(points, 2.0) == -8.0
    assert strongest_within(points, 1.1) is None
    assert strongest_within(points, 5.0) == 16.0
    assert strongest_within([point(None, None), point(1.0, 3.0)], 2.0) is None
