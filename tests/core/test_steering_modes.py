"""Projection cap, component rescale, conditional (trigger) steering and control rows, on a tiny model."""

import pytest
import torch

from sae_core.generation import Sampling
from sae_core.hooks import splice
from sae_core.lm import LoadedModel
from sae_core.sites import parse_site
from sae_core.steering import (
    Direction,
    Intervention,
    Steering,
    SteeringError,
    Trigger,
    generate_steered,
    steer,
    stream_steered,
)
from tests.core.test_steering import GREEDY, PROMPT, SAMPLED, SITE, active_feature, make_sae, site_acts
from tests.factories import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")


@pytest.fixture(scope="module", params=["topk", "relu"])
def sae(request):
    return make_sae(request.param)


def steered_acts(lm, sae, runs, ids=PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """The site activation before and after the steering of a whole-sequence forward, [B, T, D] each."""
    seen = []
    site = parse_site(SITE)
    with splice(lm.model, site, lambda x: seen.append(x.clone())), steer(lm.model, sae, runs, len(ids)), \
            splice(lm.model, site, lambda x: seen.append(x.clone())):
        lm.model(input_ids=torch.tensor([ids] * len(runs)))
    return seen[0], seen[1]


def unit(sae, feature: int) -> torch.Tensor:
    return sae.W_dec[feature] / sae.W_dec[feature].norm()


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED])
def test_modes_that_change_nothing_give_the_baseline_to_the_token(lm, sae, sampling):
    feature = active_feature(lm, sae)
    top = float((site_acts(lm, PROMPT) @ unit(sae, feature)).abs().max())
    noops = [
        Steering((Intervention(feature, "cap", top * 100 + 1e3),)),
        Steering((Intervention(feature, "rescale", 1.0),)),
        Steering((Intervention(feature, "clamp", 50.0),), trigger=Trigger(feature, threshold=1e9, stop=True)),
    ]
    base, *rows = generate_steered(lm, sae, PROMPT, [None, *noops], sampling)
    assert all(row.token_ids == base.token_ids for row in rows)
    ids = torch.tensor([PROMPT])
    plain = lm.model(input_ids=ids).logits
    for run in noops:
        with steer(lm.model, sae, [run], len(PROMPT)):
            assert torch.equal(lm.model(input_ids=ids).logits, plain)


def test_cap_limits_the_component_and_rescale_multiplies_it_leaving_the_rest(lm, sae):
    feature = active_feature(lm, sae)
    u = unit(sae, feature)
    before, after = steered_acts(lm, sae, [Steering((Intervention(feature, "cap", 0.01),)),
                                           Steering((Intervention(feature, "rescale", -3.0),))])
    c_BT, c_new_BT = before @ u, after @ u
    torch.testing.assert_close(c_new_BT[0], c_BT[0].clamp(max=0.01), atol=1e-5, rtol=0)
    torch.testing.assert_close(c_new_BT[1], -3.0 * c_BT[1], atol=1e-5, rtol=1e-5)
    rest_before, rest_after = before - c_BT[..., None] * u, after - c_new_BT[..., None] * u
    torch.testing.assert_close(rest_after, rest_before, atol=1e-5, rtol=0)
    assert (c_BT[0] > 0.01).any(), "the cap must bind somewhere for this test to mean anything"


def test_a_trigger_steers_exactly_where_its_feature_passes_the_threshold(lm, sae):
    trigger = active_feature(lm, sae)
    f_T = sae.encode(site_acts(lm, PROMPT))[:, trigger]
    threshold = float(f_T.median())
    run = Steering((Intervention(3, "add", 5.0),), trigger=Trigger(trigger, threshold))
    before, after = steered_acts(lm, sae, [run])
    changed_T = (after[0] != before[0]).any(-1)
    assert torch.equal(changed_T, f_T > threshold)
    assert 0 < int(changed_T.sum()) < len(PROMPT)


def test_a_stopping_trigger_ends_only_its_row_once_it_fires(lm, sae):
    trigger = active_feature(lm, sae)
    stopping = Steering((Intervention(3, "add", 0.0),), trigger=Trigger(trigger, -1.0, stop=True))
    base, stopped = generate_steered(lm, sae, PROMPT, [None, stopping], Sampling(8, 0.0))
    assert stopped.finished == "trigger" and len(stopped.token_ids) == 1
    assert stopped.token_ids == base.token_ids[:1] and len(base.token_ids) > 1


def test_a_flipped_control_subtracts_what_the_real_run_adds(lm, sae):
    real = Steering((Intervention(active_feature(lm, sae), "clamp", 3.0), Intervention(5, "add", 2.0)))
    before, after = steered_acts(lm, sae, [real, real.as_control("flipped")])
    torch.testing.assert_close(after[1] - before[1], -(after[0] - before[0]), atol=1e-5, rtol=0)


def test_a_random_control_moves_as_far_in_another_seeded_direction(lm, sae):
    real = Steering((Intervention(5, "add", 2.0),))
    runs = [real, real.as_control("random", seed=1), real.as_control("random", seed=1),
            real.as_control("random", seed=2)]
    before, after = steered_acts(lm, sae, runs)
    d_BTD = after - before
    torch.testing.assert_close(d_BTD.norm(dim=-1)[1:], d_BTD.norm(dim=-1)[:1].expand(3, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d_BTD[1], d_BTD[2], atol=1e-6, rtol=0)  # batch rows may differ in the last bits
    assert not torch.allclose(d_BTD[1], d_BTD[3], atol=1e-3)
    cosine = torch.nn.functional.cosine_similarity(d_BTD[0, 0], d_BTD[1, 0], dim=0)
    assert abs(float(cosine)) < 0.9


def test_a_trigger_out_of_range_names_the_field(lm, sae):
    run = Steering((Intervention(3, "add", 1.0),), trigger=Trigger(24))
    with pytest.raises(SteeringError, match="feature 24 is out of range") as caught:
        stream_steered(lm, sae, PROMPT, [run], GREEDY)
    assert caught.value.field == "trigger.feature"


def raw_direction(seed: int = 0, width: int = 32) -> Direction:
    return Direction("cats minus code", tuple(torch.randn(width, generator=torch.Generator().manual_seed(seed)).tolist()))


def test_a_raw_direction_adds_value_times_its_vector_and_caps_its_component(lm, sae):
    d = raw_direction()
    v_D = torch.tensor(d.vector)
    u_D = v_D / v_D.norm()
    before, after = steered_acts(lm, sae, [Steering((Intervention(d, "add", 2.5), Intervention(4, "add", 1.0))),
                                           Steering((Intervention(d, "cap", -0.2),))])
    expected = before[0] + 2.5 * v_D + sae.W_dec[4]
    torch.testing.assert_close(after[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[1] @ u_D, (before[1] @ u_D).clamp(max=-0.2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode,value", [("add", 0.0), ("rescale", 1.0), ("cap", 1e6)])
def test_a_raw_direction_that_changes_nothing_is_the_baseline_to_the_token(lm, sae, mode, value):
    base, same = generate_steered(lm, sae, PROMPT, [None, Steering((Intervention(raw_direction(), mode, value),))],
                                  SAMPLED)
    assert same.token_ids == base.token_ids


def test_a_raw_direction_takes_only_add_cap_or_rescale_and_its_own_width(lm, sae):
    with pytest.raises(SteeringError, match="no SAE activation to clamp"):
        Intervention(raw_direction(), "clamp", 1.0)
    with pytest.raises(SteeringError, match="is 16 wide; this SAE's site is 32 wide"):
        stream_steered(lm, sae, PROMPT, [Steering((Intervention(raw_direction(width=16), "add", 1.0),))], GREEDY)
