import threading
from typing import get_args

import pytest
import torch

from sae_core.generation import GenerationError, Limits, Sampling, collect, encode_prompt, stream
from sae_core.hooks import splice
from sae_core.lm import LoadedModel
from sae_core.provenance import Provenance
from sae_core.saes import ARCHITECTURES, SAE, SAEConfig, build_sae, takes_k, transcodes
from sae_core.sites import SiteError, parse_site, site_module
from sae_core.steering import (
    MODES,
    POSITIONS,
    Intervention,
    Mode,
    Positions,
    Steering,
    generate_steered,
    steer,
    stream_steered,
)
from sae_core.steering_measures import sweep
from tests.factories import tiny_model, tiny_tokenizer

SITE = "layers.1.resid_post"
GREEDY = Sampling(max_new_tokens=12, temperature=0.0)
SAMPLED = Sampling(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)


def make_sae(architecture: str, d_in: int = 32, d_sae: int = 24, seed: int = 0) -> SAE:
    """A real SAE whose orthonormal decoder rows (encoder their transpose) make re-encoding exact."""
    k = 8 if takes_k(architecture) else None
    cfg = SAEConfig(architecture=architecture, d_in=d_in, d_sae=d_sae, k=k, provenance=Provenance(site=parse_site(SITE)))
    sae = build_sae(cfg, seed).requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    q_DF, _ = torch.linalg.qr(torch.randn(d_in, d_sae, generator=generator))
    sae.W_dec.copy_(q_DF.T * 0.5)
    sae.W_enc.copy_(q_DF * 2.0)
    sae.b_dec.copy_(torch.randn(d_in, generator=generator) * 0.1)
    return sae


@pytest.fixture(scope="module")
def lm():
    return LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")


@pytest.fixture(scope="module", params=[a for a in ARCHITECTURES if not transcodes(a)])
def sae(request):
    return make_sae(request.param)


PROMPT = [0, *range(40, 50)]


def site_acts(lm, ids: list[int]) -> torch.Tensor:
    """The unsteered activation at SITE for one sequence, [T, D]."""
    seen = []
    with splice(lm.model, parse_site(SITE), lambda x: seen.append(x.clone())):
        lm.model(input_ids=torch.tensor([ids]))
    return seen[0][0]


def active_feature(lm, sae, ids=PROMPT) -> int:
    """A feature firing on every prompt token."""
    f_TF = sae.encode(site_acts(lm, ids))
    return int((f_TF > 0).float().mean(0).argmax())


def inactive_feature(lm, sae, ids: list[int]) -> int:
    """A feature silent on every token of `ids`."""
    silent = (sae.encode(site_acts(lm, ids)) == 0).all(0).nonzero()
    assert len(silent), "the test SAE has no silent feature on this text"
    return int(silent[0])


def reference(sae, x_BTD, runs, prompt_len, start=0):
    """x + decode(f') - decode(f) with the full encoder and decoder, the definition the fast path meets."""
    n_rows, n_tokens, d_in = x_BTD.shape
    f = sae.encode(x_BTD.reshape(-1, d_in)).view(n_rows, n_tokens, -1)
    f_new = f.clone()
    positions = torch.arange(start, start + x_BTD.shape[1])
    for row, run in enumerate(runs):
        if run is None:
            continue
        wanted = {"all": positions >= 0, "prompt": positions < prompt_len, "generated": positions >= prompt_len}
        mask_T = wanted[run.positions]
        for i in run.interventions:
            if i.mode in ("cap", "rescale"):
                continue
            old = f[row, mask_T, i.feature]
            new = {"clamp": torch.full_like(old, i.value), "add": old + i.value, "scale": old * i.value,
                   "ablate": torch.zeros_like(old)}[i.mode]
            f_new[row, mask_T, i.feature] = new
    out = x_BTD + (sae.decode(f_new.flatten(0, 1)) - sae.decode(f.flatten(0, 1))).view_as(x_BTD)
    for row, run in enumerate(runs):
        for i in run.interventions if run else ():
            if i.mode in ("cap", "rescale"):
                mask_T = {"all": positions >= 0, "prompt": positions < prompt_len,
                          "generated": positions >= prompt_len}[run.positions]
                u = sae.W_dec[i.feature] / sae.W_dec[i.feature].norm()
                c = x_BTD[row, mask_T] @ u
                new = torch.clamp(c, max=i.value) if i.mode == "cap" else c * i.value
                out[row, mask_T] += (new - c)[:, None] * u
    return out


def test_stream_matches_model_generate_greedy(lm):
    events = list(stream(lm.model, lm.tokenizer, PROMPT, 1, GREEDY))
    expected = lm.model.generate(torch.tensor([PROMPT]), do_sample=False, max_new_tokens=12,
                                 pad_token_id=2)[0, len(PROMPT):]
    assert [e.token_id for e in events] == expected.tolist()
    assert [e.step for e in events] == list(range(len(events)))
    assert events[-1].finished in ("eos", "length")


def test_sampling_is_deterministic_for_a_seed_and_depends_on_it(lm):
    def run(seed):
        return collect(stream(lm.model, lm.tokenizer, PROMPT, 1, Sampling(20, 1.0, 1.0, seed)), 1)[0]

    assert run(5) == run(5)
    assert run(5).token_ids != run(6).token_ids


def test_rows_with_equal_distributions_draw_equal_tokens(lm):
    a, b, c = collect(stream(lm.model, lm.tokenizer, PROMPT, 3, SAMPLED), 3)
    solo = collect(stream(lm.model, lm.tokenizer, PROMPT, 1, SAMPLED), 1)[0]
    assert a.token_ids == b.token_ids == c.token_ids == solo.token_ids


def test_text_pieces_join_to_the_decoded_tokens(lm):
    tok = lm.tokenizer
    generation = collect(stream(lm.model, tok, PROMPT, 1, Sampling(30, 1.0, 1.0, 1)), 1)[0]
    assert generation.text == tok.decode(generation.token_ids, skip_special_tokens=True)


def test_noop_interventions_leave_tokens_and_logits_exactly_unchanged(lm, sae):
    noop = Steering((Intervention(3, "scale", 1.0), Intervention(5, "add", 0.0)))
    ids = torch.tensor([PROMPT])
    plain = lm.model(input_ids=ids).logits
    with steer(lm.model, sae, [noop], len(PROMPT)):
        steered = lm.model(input_ids=ids).logits
    assert torch.equal(plain, steered)
    for sampling in (GREEDY, SAMPLED):
        base, same = generate_steered(lm, sae, PROMPT, [None, noop], sampling)
        assert base.token_ids == same.token_ids


def test_ablating_a_silent_feature_is_exactly_nothing(lm, sae):
    ids = PROMPT + generate_steered(lm, sae, PROMPT, [None], GREEDY)[0].token_ids
    silent = inactive_feature(lm, sae, ids)
    base, ablated = generate_steered(lm, sae, PROMPT, [None, Steering((Intervention(silent, "ablate"),))], GREEDY)
    assert base == ablated


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_fast_path_equals_the_full_reference(lm, sae, positions):
    runs = [
        None,
        Steering((Intervention(2, "clamp", 3.0), Intervention(7, "add", -1.5), Intervention(11, "scale", 4.0)),
                 positions),
        Steering((Intervention(active_feature(lm, sae), "ablate"),), positions),
        Steering((Intervention(4, "cap", 0.05), Intervention(13, "rescale", -2.0), Intervention(2, "add", 1.0)),
                 positions),
    ]
    prompt_len = 6
    seen = []
    ids = torch.tensor([PROMPT] * len(runs))
    with splice(lm.model, parse_site(SITE), lambda x: seen.append(x.clone())), \
            steer(lm.model, sae, runs, prompt_len), \
            splice(lm.model, parse_site(SITE), lambda x: seen.append(x.clone())):
        lm.model(input_ids=ids)
    before, after = seen
    torch.testing.assert_close(after, reference(sae, before, runs, prompt_len), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode,value", [("ablate", 0.0), ("clamp", 2.5), ("clamp", 0.0)])
def test_reencoding_the_steered_activation_gives_the_set_value(lm, sae, mode, value):
    feature = active_feature(lm, sae)
    seen = []
    with steer(lm.model, sae, [Steering((Intervention(feature, mode, value),))], len(PROMPT)), \
            splice(lm.model, parse_site(SITE), lambda x: seen.append(x.clone())):
        lm.model(input_ids=torch.tensor([PROMPT]))
    f_TF = sae.encode(seen[0][0])
    assert torch.allclose(f_TF[:, feature], torch.full_like(f_TF[:, feature], value), atol=1e-4)
    # Features active before keep their values (a TopK SAE may let a new one in when a slot frees up).
    before_TF = sae.encode(site_acts(lm, PROMPT))
    kept_TF = (before_TF > 0) & (torch.arange(f_TF.shape[1]) != feature)
    torch.testing.assert_close(f_TF[kept_TF], before_TF[kept_TF], atol=1e-4, rtol=0)


def test_ablating_an_active_feature_changes_the_output(lm, sae):
    base, ablated = generate_steered(
        lm, sae, PROMPT, [None, Steering((Intervention(active_feature(lm, sae), "ablate"),))], GREEDY
    )
    assert base.token_ids != ablated.token_ids


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_positions_are_tracked_across_cached_steps(lm, sae, positions):
    run = Steering((Intervention(4, "add", 5.0),), positions)
    site = parse_site(SITE)
    before, after = [], []
    # Hooks run in registration order: one recorder sees the activation before the steering, one after.
    with splice(lm.model, site, lambda x: before.append(x.clone())), steer(lm.model, sae, [run], len(PROMPT)), \
            splice(lm.model, site, lambda x: after.append(x.clone())):
        tokens = [e.token_id for e in stream(lm.model, lm.tokenizer, PROMPT, 1, GREEDY)]
    assert [x.shape[1] for x in before] == [len(PROMPT)] + [1] * (len(tokens) - 1)
    changed_T = torch.cat([(b != a).any(-1)[0] for b, a in zip(before, after)])
    position_T = torch.arange(len(changed_T))
    wanted = {"all": position_T >= 0, "prompt": position_T < len(PROMPT), "generated": position_T >= len(PROMPT)}
    assert torch.equal(changed_T, wanted[positions])
    # Whole-sequence scoring under the same steering predicts exactly the cached loop's greedy tokens.
    ids = torch.tensor([PROMPT + tokens[:-1]])
    with steer(lm.model, sae, [run], len(PROMPT)):
        logits = lm.model(input_ids=ids, use_cache=False).logits[0, len(PROMPT) - 1:]
    assert logits.argmax(-1).tolist() == tokens


def test_a_batch_of_runs_matches_each_run_alone(lm, sae):
    a = Steering((Intervention(active_feature(lm, sae), "ablate"),))
    b = Steering((Intervention(1, "clamp", 30.0), Intervention(9, "add", 20.0)), "generated")
    together = generate_steered(lm, sae, PROMPT, [None, a, b], SAMPLED)
    alone = [generate_steered(lm, sae, PROMPT, [run], SAMPLED)[0] for run in (None, a, b)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert together[1].token_ids != together[0].token_ids != together[2].token_ids


def test_cancel_event_stops_the_stream_and_closing_removes_the_hook(lm, sae):
    cancel = threading.Event()
    events = stream_steered(lm, sae, PROMPT, [Steering((Intervention(1, "clamp", 9.0),))],
                            Sampling(50, 0.0), cancel=cancel)
    got = [next(events), next(events)]
    cancel.set()
    assert list(events) == [] and len(got) == 2
    assert not site_module(lm.model, parse_site(SITE))._forward_hooks
    abandoned = stream_steered(lm, sae, PROMPT, [Steering((Intervention(1, "clamp", 9.0),))], GREEDY)
    next(abandoned)
    abandoned.close()
    assert not site_module(lm.model, parse_site(SITE))._forward_hooks


def test_encode_prompt_uses_the_chat_template_or_raw_text_with_bos():
    tok = tiny_tokenizer()
    assert encode_prompt(tok, "hi", chat=False) == [0, *tok("hi", add_special_tokens=False).input_ids]
    assert encode_prompt(tok, "hi", chat=True) == encode_prompt(tok, "hi", chat=False)  # no template
    tok.chat_template = "{% for m in messages %}<{{ m.content }}>{% endfor %}"
    assert tok.decode(encode_prompt(tok, "hi", chat=True)) == "<hi>"


@pytest.mark.parametrize("call,message", [
    (lambda lm, sae: Intervention(1, "boost", 2.0), "unknown mode 'boost'"),
    (lambda lm, sae: Intervention.parse("12-clamp"), "FEATURE:MODE"),
    (lambda lm, sae: Steering((), "middle"), "unknown positions"),
    (lambda lm, sae: Steering((Intervention(1, "ablate"), Intervention(1, "scale", 2.0))), "appears twice"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT, [Steering((Intervention(24, "ablate"),))], GREEDY),
     r"feature 24 is out of range: this SAE has features 0\.\.23"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT, [None], Sampling(max_new_tokens=300)),
     "max_new_tokens is 300; it must be between 1 and 256"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT * 50, [None], GREEDY), "the prompt is 550 tokens; the limit is 512"),
    (lambda lm, sae: encode_prompt(lm.tokenizer, "x" * 600), "the prompt is 601 tokens; the limit is 512"),
    (lambda lm, sae: encode_prompt(lm.tokenizer, "  "), "the prompt is empty"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT, [None], Sampling(temperature=-1.0)), "temperature"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT, [None], Sampling(top_p=0.0)), "top_p"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT, [None] * 10, GREEDY), "10 runs requested"),
    (lambda lm, sae: stream_steered(lm, sae, PROMPT * 180, [None], Sampling(max_new_tokens=100), Limits(4096)),
     "exceeds the model's context of 2048"),
    (lambda lm, sae: sweep(lm, sae, PROMPT, Steering((Intervention(1, "add"),)), [1.0], GREEDY, target=""),
     "target text is empty"),
    (lambda lm, sae: sweep(lm, sae, PROMPT, Steering((Intervention(1, "add"),)), [], GREEDY), "at least one strength"),
    (lambda lm, sae: sweep(lm, sae, PROMPT, Steering((Intervention(1, "ablate"),)), [1.0], GREEDY), "ablate takes none"),
])
def test_bad_inputs_fail_with_a_clear_error_before_any_token(lm, sae, call, message):
    with pytest.raises(GenerationError, match=message):
        call(lm, sae)


def test_every_mode_and_positions_value_the_api_accepts_has_a_meaning():
    assert set(MODES) == set(get_args(Mode))
    assert set(POSITIONS) == set(get_args(Positions))


def test_an_sae_of_another_width_is_refused(lm):
    with pytest.raises(SiteError, match="16-wide activations but the model's are 32 wide"):
        stream_steered(lm, make_sae("relu", d_in=16, d_sae=8), PROMPT, [None], GREEDY)
