"""The local replacement model: it reproduces the model on its prompt, and every edge is the exact finite
difference of its target under the frozen linearisation."""

from __future__ import annotations

import pytest
import torch

from sae_core.attribution.frozen import FreezeError
from sae_core.attribution.replacement import (
    EMBEDDING,
    ERROR,
    FEATURE,
    LOGIT,
    ReplacementError,
    ReplacementModel,
    Target,
)
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae, sae_class, takes_k
from sae_core.sites import Site
from tests.factories import tiny_model

IDS = torch.tensor([0, 17, 80, 33, 150, 9, 61, 200, 45])


def transcoder(layer: int, arch: str = "relu_transcoder", skip: bool = False, seed: int = 0, model: str = "tiny"):
    """A random transcoder reading the tiny model's layer `layer`: a fair share of features fire, and its output is
    of the MLP's size (the tiny model's residual stream is ~0.02 wide, so a far larger output would leave errors
    that cancel it to within rounding, not a transcoder's)."""
    cfg = SAEConfig(architecture=arch, d_in=32, d_sae=48, k=6 if takes_k(arch) else None, skip_connection=skip,
                    provenance=Provenance(model=model, site=Site(layer, "mlp_in")), **sae_class(arch).config_defaults)
    sae = build_sae(cfg, seed=seed + layer)
    g = torch.Generator().manual_seed(seed + layer + 50)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.5, generator=g)
        sae.b_enc.normal_(-0.2, 0.1, generator=g)
        sae.W_dec.normal_(0, 0.002, generator=g)
        sae.b_dec.normal_(0, 0.001, generator=g)
        if sae.W_skip is not None:
            sae.W_skip.normal_(0, 0.002, generator=g)
    return sae


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model("llama").eval().requires_grad_(False)


@pytest.fixture(scope="module", params=[("relu_transcoder", False), ("transcoder", True)], ids=["relu", "topk-skip"])
def replacement(model, request):
    arch, skip = request.param
    return ReplacementModel(model, [transcoder(layer, arch, skip) for layer in range(3)], IDS)


def test_the_frozen_replacement_reproduces_the_model_on_its_prompt(model, replacement):
    with torch.no_grad():
        expected = model(input_ids=IDS[None]).logits[0]
    assert torch.allclose(replacement.logits_TV, expected, atol=1e-5)
    logits, _ = replacement.run()
    assert torch.allclose(logits, expected, atol=1e-5)
    assert all((a > 0).any() for a in replacement.acts) and all(e.abs().max() > 0 for e in replacement.errors)


def zeroed(replacement, n, sources):
    """The replacement's output with source n set to zero (a feature's activation, an error or an embedding)."""
    layer, pos, kind = int(sources.layer_S[n]), int(sources.pos_S[n]), int(sources.kind_S[n])
    if kind == FEATURE:
        acts = [a.clone() for a in replacement.acts]
        acts[layer][pos, int(sources.feature_S[n])] = 0
        return replacement.run(acts=acts)
    if kind == ERROR:
        errors = [e.clone() for e in replacement.errors]
        errors[layer][pos] = 0
        return replacement.run(errors=errors)
    embed = replacement.embed_TD.clone()
    embed[pos] = 0
    return replacement.run(embed_TD=embed)


def test_every_edge_is_the_finite_difference_of_its_target_under_the_frozen_linearisation(replacement):
    sources = replacement.sources()
    last = len(IDS) - 1
    top = int(replacement.logits_TV[last].argmax())
    deep_pos, deep_feature = replacement.acts[2].nonzero()[-1].tolist()
    mid_pos, mid_feature = replacement.acts[1].nonzero()[0].tolist()
    targets = [Target(LOGIT, 3, last, top), Target(FEATURE, 2, deep_pos, deep_feature),
               Target(FEATURE, 1, mid_pos, mid_feature)]
    weights = replacement.edges_into(targets, sources)
    clean_logits, clean_inputs = replacement.run()
    checked = {FEATURE: 0, ERROR: 0, EMBEDDING: 0}
    for n in range(len(sources)):
        logits, inputs = zeroed(replacement, n, sources)
        for r, target in enumerate(targets):
            change = (replacement.target_value(target, clean_logits, clean_inputs)
                      - replacement.target_value(target, logits, inputs))
            assert float(weights[r, n]) == pytest.approx(float(change), rel=1e-4, abs=2e-5), (r, n)
            if abs(float(change)) > 1e-4:
                checked[int(sources.kind_S[n])] += 1
    # Not vacuous: each kind of source moved some target.
    assert all(count > 0 for count in checked.values()), checked


def test_a_feature_has_no_edges_from_its_own_layer_or_later_positions(replacement):
    sources = replacement.sources()
    pos, feature = replacement.acts[1].nonzero()[0].tolist()
    weights = replacement.edges_into([Target(FEATURE, 1, pos, feature)], sources)[0]
    blocked = (sources.layer_S >= 1) & (sources.kind_S != EMBEDDING) | (sources.pos_S > pos)
    assert weights[blocked].abs().max() == 0 and weights[~blocked].abs().max() > 0


def test_a_constant_bos_leaves_its_features_and_errors_out_and_every_other_edge_as_it_was(model, replacement):
    held = ReplacementModel(model, replacement.transcoders, IDS, zero_bos=True)
    torch.testing.assert_close(held.logits_TV, replacement.logits_TV)  # the model itself is unchanged
    every, kept = replacement.sources(), held.sources()
    assert not ((kept.pos_S == 0) & (kept.kind_S == FEATURE)).any() and ((every.pos_S == 0) & (every.kind_S == FEATURE)).any()
    bos_errors = (kept.pos_S == 0) & (kept.kind_S == ERROR)
    assert bos_errors.sum() == len(held.transcoders) and (kept.value_S[bos_errors] == 0).all()
    target = Target(LOGIT, len(held.transcoders), len(IDS) - 1, 5)
    weights = held.edges_into([target], kept)[0]
    assert (weights[bos_errors] == 0).all()
    same = {(int(k), int(layer), int(p), int(f)): i for i, (k, layer, p, f)
            in enumerate(zip(every.kind_S, every.layer_S, every.pos_S, every.feature_S, strict=True))}
    columns = [same[(int(k), int(layer), int(p), int(f))] for k, layer, p, f
               in zip(kept.kind_S, kept.layer_S, kept.pos_S, kept.feature_S, strict=True)]
    before = replacement.edges_into([target], every)[0][columns]
    torch.testing.assert_close(weights[~bos_errors], before[~bos_errors])


def test_bad_transcoder_sets_are_refused_with_the_layer_named(model):
    with pytest.raises(ReplacementError, match="no transcoder for layer"):
        ReplacementModel(model, [transcoder(0), transcoder(2)], IDS)
    with pytest.raises(ReplacementError, match=r"two transcoders read layers\.1\.mlp_in"):
        ReplacementModel(model, [transcoder(0), transcoder(1), transcoder(1), transcoder(2)], IDS)
    sae = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=48, k=4,
                              provenance=Provenance(site=Site(0, "resid_post"))))
    with pytest.raises(ReplacementError, match="not a transcoder"):
        ReplacementModel(model, [sae, transcoder(1), transcoder(2)], IDS)


def test_a_model_normalised_by_layernorm_is_refused():
    gpt2 = tiny_model("gpt2").eval()
    sets = [transcoder(layer) for layer in range(3)]
    with pytest.raises(FreezeError, match="LayerNorm"):
        ReplacementModel(gpt2, sets, IDS)


@pytest.mark.parametrize("freeze", [True, False], ids=["attention frozen", "attention live"])
def test_pinning_features_to_their_own_values_changes_nothing(model, replacement, freeze):
    with torch.no_grad():
        expected = model(input_ids=IDS[None]).logits[0]
    assert torch.allclose(replacement.intervene({}, freeze), expected, atol=1e-5)
    pos, feature = replacement.acts[1].nonzero()[0].tolist()
    same = {(1, pos, feature): float(replacement.acts[1][pos, feature])}
    assert torch.allclose(replacement.intervene(same, freeze), expected, atol=1e-5)
    assert not torch.allclose(replacement.intervene({(1, pos, feature): 0.0}, freeze), expected, atol=1e-4)


def test_a_pin_in_the_last_layer_moves_a_logit_by_its_edge_when_frozen_and_as_the_model_does_when_live(
        model, replacement):
    """After the last MLP only the final norm and the unembedding remain: frozen, the change is the edge's;
    live, it is the model's own with the feature's decoder row taken out of that MLP's output."""
    last = len(IDS) - 1
    feature = int(replacement.acts[2][last].nonzero()[0])
    top = int(replacement.logits_TV[last].argmax())
    target = Target(LOGIT, 3, last, top)
    sources = replacement.sources()
    n = int(((sources.layer_S == 2) & (sources.pos_S == last) & (sources.feature_S == feature)).nonzero())
    edge = float(replacement.edges_into([target], sources)[0, n])
    clean = replacement.intervene({})
    frozen_logits = replacement.intervene({(2, last, feature): 0.0})
    value = lambda logits: float(replacement.target_value(target, logits, []))  # noqa: E731
    assert value(clean) - value(frozen_logits) == pytest.approx(edge, rel=1e-4, abs=1e-5)
    tc = replacement.transcoders[2]
    removed = float(replacement.acts[2][last, feature]) * tc.W_dec[feature]

    def take_out(_m, _a, out):
        out = out.clone()
        out[0, last] -= removed
        return out

    handle = replacement.mlps[2].register_forward_hook(take_out)
    try:
        with torch.no_grad():
            expected = model(input_ids=IDS[None]).logits[0]
    finally:
        handle.remove()
    assert torch.allclose(replacement.intervene({(2, last, feature): 0.0}, freeze_attention=False), expected,
                          atol=1e-5)


def test_a_pin_outside_the_prompt_or_the_dictionary_is_refused(replacement):
    with pytest.raises(ReplacementError, match="no feature 48 at layer 0"):
        replacement.intervene({(0, 0, 48): 1.0})
    with pytest.raises(ReplacementError, match="position 99"):
        replacement.intervene({(0, 99, 0): 1.0})
