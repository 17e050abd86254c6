"""Steering a transcoder on a tiny model: its features are read from an MLP's input and their change is added to
the MLP's output, which is otherwise the model's own; cap, rescale and raw directions are refused."""

import pytest
import torch

from sae_core.hooks import capture_sites
from sae_core.lm import LoadedModel
from sae_core.sites import Site
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
from sae_core.steering_measures import measure_rows, sweep
from tests.core.test_replacement import transcoder
from tests.core.test_steering import GREEDY, PROMPT, SAMPLED
from tests.factories import tiny_model, tiny_tokenizer

LAYER = 1
MLP_IN, MLP_OUT = Site(LAYER, "mlp_in"), Site(LAYER, "mlp_out")


@pytest.fixture(scope="module")
def lm():
    return LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")


@pytest.fixture(scope="module", params=[("relu_transcoder", False), ("transcoder", True), ("jumprelu_transcoder", False)],
                ids=["relu", "topk-skip", "jumprelu"])
def tc(request):
    arch, skip = request.param
    return transcoder(LAYER, arch, skip).requires_grad_(False)


def mlp_acts(lm, tc, runs) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's MLP input and output [B, T, D] of a whole-sequence forward, one row per run; with any run
    steered the hooks read after the steering's."""
    ids = torch.tensor([PROMPT] * len(runs))
    with steer(lm.model, tc, runs, len(PROMPT)), capture_sites(lm.model, (MLP_IN, MLP_OUT), stop=False) as seen:
        lm.model(input_ids=ids)
    return seen[0].tensor(), seen[1].tensor()


def busiest_feature(lm, tc) -> int:
    """The feature firing on the most prompt tokens."""
    x_TD = mlp_acts(lm, tc, [None])[0][0]
    return int((tc.encode(x_TD) > 0).sum(0).argmax())


def test_no_intervention_is_exactly_the_model(lm, tc):
    noop = Steering((Intervention(3, "scale", 1.0), Intervention(5, "add", 0.0)))
    ids = torch.tensor([PROMPT] * 2)
    plain = lm.model(input_ids=ids).logits
    with steer(lm.model, tc, [None, noop], len(PROMPT)):
        steered = lm.model(input_ids=ids).logits
    assert torch.equal(plain, steered)
    base, same = generate_steered(lm, tc, PROMPT, [None, noop], SAMPLED)
    assert base.token_ids == same.token_ids


@pytest.mark.parametrize("mode,value", [("clamp", 2.5), ("add", -1.5), ("scale", 3.0), ("ablate", 0.0)])
def test_a_feature_change_is_added_to_the_mlp_output_alone(lm, tc, mode, value):
    feature = busiest_feature(lm, tc)
    x_before, y_before = mlp_acts(lm, tc, [None, None])
    x_after, y_after = mlp_acts(lm, tc, [None, Steering((Intervention(feature, mode, value),))])
    f_T = tc.encode(x_before[1])[:, feature]
    new_T = {"clamp": torch.full_like(f_T, value), "add": f_T + value, "scale": f_T * value,
             "ablate": torch.zeros_like(f_T)}[mode]
    assert torch.equal(x_after, x_before)
    assert torch.equal(y_after[0], y_before[0])
    torch.testing.assert_close(y_after[1] - y_before[1], (new_T - f_T)[:, None] * tc.W_dec[feature], atol=1e-7, rtol=1e-5)
    assert not torch.equal(y_after[1], y_before[1])


def test_a_trigger_reads_the_transcoders_feature_on_the_mlp_input(lm, tc):
    feature = busiest_feature(lm, tc)
    x_TD = mlp_acts(lm, tc, [None])[0][0]
    fires_T = tc.encode(x_TD)[:, feature] > 0
    assert fires_T.any() and not fires_T.all()
    run = Steering((Intervention(7, "add", 40.0),), trigger=Trigger(feature))
    _, y_before = mlp_acts(lm, tc, [None])
    _, y_after = mlp_acts(lm, tc, [run])
    assert torch.equal((y_after[0] != y_before[0]).any(-1), fires_T)


def test_controls_move_the_mlp_output_along_flipped_or_random_directions(lm, tc):
    real = Steering((Intervention(busiest_feature(lm, tc), "clamp", 3.0), Intervention(5, "add", 2.0)))
    _, y_before = mlp_acts(lm, tc, [None] * 3)
    _, y_after = mlp_acts(lm, tc, [real, real.as_control("flipped"), real.as_control("random", seed=1)])
    d_BTD = y_after - y_before
    torch.testing.assert_close(d_BTD[1], -d_BTD[0], atol=1e-7, rtol=1e-5)
    assert not torch.allclose(d_BTD[2], d_BTD[0], atol=1e-6)


@pytest.mark.parametrize("intervention,message", [
    (Intervention(3, "cap", 1.0), "cap on feature 3 cannot steer a transcoder"),
    (Intervention(3, "rescale", 2.0), "rescale on feature 3 cannot steer a transcoder"),
    (Intervention(Direction("up", (0.1,) * 32), "add", 1.0), "add on direction 'up' cannot steer a transcoder"),
    (Intervention(Direction("up", (0.1,) * 32), "cap", 1.0), "cap on direction 'up' cannot steer a transcoder"),
])
def test_cap_rescale_and_raw_directions_are_refused_naming_the_field(lm, tc, intervention, message):
    runs = [None, Steering((Intervention(1, "clamp", 2.0), intervention))]
    with pytest.raises(SteeringError, match=message) as caught:
        stream_steered(lm, tc, PROMPT, runs, GREEDY)
    assert caught.value.field == "interventions"
    with pytest.raises(SteeringError, match=message), steer(lm.model, tc, runs, len(PROMPT)):
        pass


def test_generation_measures_and_sweeps_run_under_a_transcoder(lm, tc):
    runs = [None, Steering((Intervention(busiest_feature(lm, tc), "clamp", 200.0),))]
    kept = generate_steered(lm, tc, PROMPT, runs, GREEDY, keep_logp=True)
    assert kept[0].token_ids != kept[1].token_ids and all(g.token_ids for g in kept)
    # The KL from the distributions the cached generation kept equals a whole-sequence forward's under steer().
    unkept = generate_steered(lm, tc, PROMPT, runs, GREEDY)
    assert [g.token_ids for g in unkept] == [g.token_ids for g in kept]
    from_kept, from_forward = measure_rows(lm, tc, PROMPT, runs, kept), measure_rows(lm, tc, PROMPT, runs, unkept)
    for a, b in zip(from_kept, from_forward):
        assert a.kl_tokens == pytest.approx(b.kl_tokens, abs=1e-5)
        assert a.effects == b.effects and a.perplexity == b.perplexity
    assert from_kept[0].kl == 0.0 and from_kept[1].kl > 0
    points = sweep(lm, tc, PROMPT, Steering((Intervention(3, "add"),)), [0.0, 200.0], GREEDY, target="hello")
    assert points[1].generation.token_ids == points[0].generation.token_ids
    assert points[1].measures.kl == pytest.approx(0.0, abs=1e-6) and points[2].measures.kl > 0
