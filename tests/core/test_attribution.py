"""Attribution on tiny models: splicing is exact, IG is complete, patching is exact where the model is linear,
ablation matches a hand-written hook, edges add up to node effects, bad input is refused by name."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sae_core.attribution import (
    AttributionConfig,
    AttributionError,
    AttributionGraph,
    AttributionRequest,
    attribute,
    dictionaries,
    neuronpedia_graph,
    next_tokens,
)
from sae_core.attribution.ablation import ablate, spearman
from sae_core.attribution.edges import METRIC, compute_edges
from sae_core.attribution.effects import integrated, patching
from sae_core.attribution.inputs import prepare
from sae_core.attribution.nodes import EMBED_LAYER, FEATURE, build_nodes
from sae_core.attribution.states import capture_states
from sae_core.sites import decoder_layers
from tests.core.attribution_setup import SITES, tiny_dicts, tiny_lm, tiny_sae

PROMPT = "hello world"
REQUEST = AttributionRequest(PROMPT, "x")
CFG = AttributionConfig()


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


@pytest.fixture(scope="module")
def dicts(lm):
    return tiny_dicts(lm)


def plain_metric(lm, ids_T: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        logits = lm.model(input_ids=ids_T[None]).logits[0, -1]
    return float(torch.log_softmax(logits, -1)[target])


def test_splicing_with_errors_kept_leaves_the_output_unchanged(lm, dicts):
    inputs = prepare(lm.tokenizer, REQUEST, CFG)
    clean, _grads, value = patching(lm.model, dicts, inputs)
    assert value == pytest.approx(plain_metric(lm, inputs.ids_T, inputs.metric.target), abs=1e-5)
    captured = capture_states(lm.model, dicts, inputs.ids_T)
    for ours, theirs in zip(clean.sites, captured.sites, strict=True):
        torch.testing.assert_close(ours.f_TF, theirs.f_TF)
        torch.testing.assert_close(ours.err_TD, theirs.err_TD)


def layer_baseline_metric(lm, dicts, inputs, layer: int, patch) -> float:
    """The metric with one whole layer at its baseline, by hand."""
    ids = inputs.ids_T[None]
    if layer == EMBED_LAYER:
        hook = lm.model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: patch.embed_TD[None])
    else:
        sae, state = dicts[layer].sae, patch.sites[layer]
        block = decoder_layers(lm.model)[dicts[layer].site.layer]
        value = (sae.decode(state.f_TF) + state.err_TD)[None]
        hook = block.register_forward_hook(lambda _m, _a, out: (value, *out[1:]) if isinstance(out, tuple) else value)
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, -1]
    finally:
        hook.remove()
    return float(torch.log_softmax(logits, -1)[inputs.metric.target])


@pytest.mark.parametrize("corrupted", [None, "jello world"])
def test_integrated_gradients_are_complete_per_layer_and_converge_with_steps(lm, dicts, corrupted):
    inputs = prepare(lm.tokenizer, AttributionRequest(PROMPT, "x", corrupted=corrupted), CFG)
    clean, _grads, value = patching(lm.model, dicts, inputs)
    patch = clean.zeros() if corrupted is None else capture_states(lm.model, dicts, inputs.corrupted_T)
    gaps = {}
    for steps in (1, 4, 32):
        nodes = build_nodes(clean, patch, integrated(lm.model, dicts, inputs, clean, patch, steps),
                            inputs.metric.position)
        gaps[steps] = []
        # Zero embeddings sit at RMSNorm's singularity (the path jumps within sqrt(eps) of 0), where no
        # midpoint rule converges quickly; the SAE sites' zero baseline is b_dec, and a corrupted prompt's
        # embeddings are a smooth path.
        first = EMBED_LAYER if corrupted else 0
        for layer in range(first, len(dicts)):
            total = float(nodes.effect_N[nodes.layer_N == layer].sum())
            expected = value - layer_baseline_metric(lm, dicts, inputs, layer, patch)
            gaps[steps].append(abs(total - expected) / max(abs(expected), 1e-3))
    # The midpoint rule's error falls as 1/steps^2: stated tolerance 2% of the layer's total change at 32 steps.
    assert max(gaps[32]) < 0.02
    assert max(gaps[32]) < max(gaps[4]) <= max(gaps[1])


def test_attribution_patching_equals_exact_ablation_on_a_model_linear_in_the_features(dicts):
    lm = tiny_lm()
    lm.model.model.norm = nn.Identity()  # logits = W_U x: the logit difference is affine in the last site
    linear = dictionaries(lm.model, lm.name, [("last", tiny_sae("layers.2.resid_post"))])
    inputs = prepare(lm.tokenizer, AttributionRequest(PROMPT, "x", contrast="y"), CFG)
    clean, grads, _value = patching(lm.model, linear, inputs)
    patch = clean.zeros()
    nodes = build_nodes(clean, patch, grads, inputs.metric.position)
    site_nodes = (nodes.layer_N == 0).nonzero()[:, 0].tolist()
    assert (nodes.kind_N[site_nodes] == FEATURE).sum() > 5
    exact = ablate(lm.model, linear, inputs, nodes, site_nodes, clean, patch, batch_rows=7)
    torch.testing.assert_close(exact, nodes.effect_N[site_nodes], atol=1e-4, rtol=1e-4)


def test_exact_ablation_equals_a_hand_written_hook(lm, dicts):
    inputs = prepare(lm.tokenizer, REQUEST, CFG)
    clean, grads, value = patching(lm.model, dicts, inputs)
    nodes = build_nodes(clean, clean.zeros(), grads, inputs.metric.position)
    on_site_1 = ((nodes.layer_N == 1) & (nodes.kind_N == FEATURE)).nonzero()[:, 0]
    n = int(on_site_1[nodes.activation_N[on_site_1].argmax()])
    pos, feature = int(nodes.pos_N[n]), int(nodes.feature_N[n])
    sae = dicts[1].sae

    def hook(_module, _args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden.clone()
        f = sae.encode(hidden[0, pos][None])[0, feature]
        hidden[0, pos] -= f * sae.W_dec[feature]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = decoder_layers(lm.model)[1].register_forward_hook(hook)
    try:
        by_hand = value - plain_metric(lm, inputs.ids_T, inputs.metric.target)
    finally:
        handle.remove()
    ours = ablate(lm.model, dicts, inputs, nodes, [n, n + 1], clean, clean.zeros(), batch_rows=2)
    assert float(ours[0]) == pytest.approx(by_hand, abs=1e-5)


def test_each_nodes_outgoing_edges_sum_to_its_effect_through_residual_cuts(lm, dicts):
    inputs = prepare(lm.tokenizer, REQUEST, CFG)
    clean, grads, _value = patching(lm.model, dicts, inputs)
    patch = clean.zeros()
    nodes = build_nodes(clean, patch, grads, inputs.metric.position)
    everything = torch.arange(len(nodes))
    edges = compute_edges(lm.model, dicts, inputs, nodes, everything, (clean, patch, grads), batch_rows=64)
    outgoing = torch.zeros(len(nodes)).index_add_(0, edges.source_E, edges.weight_E)
    torch.testing.assert_close(outgoing, nodes.effect_N, atol=1e-5, rtol=1e-3)
    assert (edges.target_E == METRIC).sum() == (nodes.layer_N == len(dicts) - 1).sum()


def test_a_run_verifies_its_top_nodes_and_round_trips_through_json(lm, dicts):
    graph = attribute(lm, dicts, REQUEST, AttributionConfig(verify_top=12, max_nodes=10))
    verified = [n for n in graph.nodes if n.exact is not None]
    assert len(verified) == 12
    assert graph.spearman is not None and -1 <= graph.spearman <= 1
    assert {n.kind for n in graph.nodes} >= {"feature", "error", "embedding", "metric"}
    assert AttributionGraph.from_dict(graph.to_dict()) == graph
    nodes, links = graph.pruned()
    ids = {n.node_id for n in nodes}
    assert links and all(link.source in ids and link.target in ids for link in links)


def test_the_bos_is_held_at_its_clean_value_unless_asked(lm, dicts):
    held = attribute(lm, dicts, REQUEST, AttributionConfig(verify_top=4, max_nodes=6))
    kept = attribute(lm, dicts, REQUEST, AttributionConfig(verify_top=4, max_nodes=6, freeze_bos=False))
    assert min(n.pos for n in held.nodes) == 1
    assert "embedding" in {n.kind for n in kept.nodes if n.pos == 0}
    assert held.active_nodes < kept.active_nodes


def test_holding_the_bos_keeps_integrated_gradients_complete(lm, dicts):
    """Nodes after the BOS account for metric(clean) - metric(baseline with the BOS at its clean value)."""
    cfg = AttributionConfig(method="ig", steps=64)
    inputs = prepare(lm.tokenizer, REQUEST, cfg)
    clean, _grads, value = patching(lm.model, dicts, inputs)
    patch = clean.zeros().held_before(clean, 1)
    nodes = build_nodes(clean, patch, integrated(lm.model, dicts, inputs, clean, patch, cfg.steps),
                        inputs.metric.position, first=1)
    assert int(nodes.pos_N.min()) == 1
    for layer in range(len(dicts)):
        total = float(nodes.effect_N[nodes.layer_N == layer].sum())
        expected = value - layer_baseline_metric(lm, dicts, inputs, layer, patch)
        assert abs(total - expected) < 0.02 * max(abs(expected), 1e-3)


def test_position_zero_cannot_be_measured_while_the_bos_is_held(lm):
    with pytest.raises(AttributionError, match="BOS") as err:
        prepare(lm.tokenizer, AttributionRequest(PROMPT, "x", position=0), CFG)
    assert err.value.field == "position"
    prepare(lm.tokenizer, AttributionRequest(PROMPT, "x", position=0), AttributionConfig(freeze_bos=False))


def test_neuronpedia_export_has_the_viewers_fields(lm, dicts):
    graph = attribute(lm, dicts, REQUEST, AttributionConfig(verify_top=3, max_nodes=10))
    exported = neuronpedia_graph(graph, slug="g1", scan="tiny")
    assert exported["metadata"]["prompt_tokens"] == graph.tokens
    ids = {n["node_id"] for n in exported["nodes"]}
    assert all({"node_id", "feature", "layer", "ctx_idx", "feature_type", "influence", "activation"} <= set(n)
               for n in exported["nodes"])
    assert {n["feature_type"] for n in exported["nodes"]} >= {"embedding", "logit"}
    assert all(link["source"] in ids and link["target"] in ids for link in exported["links"])


@pytest.mark.parametrize("prompt", [PROMPT, "the cat sat on the"])
def test_every_offered_next_token_can_be_the_target(lm, prompt):
    offered = next_tokens(lm, prompt)
    assert len(offered) == 10
    ids_T = prepare(lm.tokenizer, AttributionRequest(prompt, "x"), CFG).ids_T
    for text, prob in offered:
        target = prepare(lm.tokenizer, AttributionRequest(prompt, text), CFG).metric.target
        assert math.exp(plain_metric(lm, ids_T, target)) == pytest.approx(prob, rel=1e-4)
    assert [p for _, p in offered] == sorted((p for _, p in offered), reverse=True)


def test_spearman_matches_the_definition():
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 30])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert spearman(torch.tensor([1.0]), torch.tensor([1.0])) is None


@pytest.mark.parametrize(("request_", "cfg", "field", "words"), [
    (AttributionRequest(PROMPT, "xy"), CFG, "target", "2 tokens"),
    (AttributionRequest(PROMPT, "x", contrast=""), CFG, "contrast", "0 tokens"),
    (AttributionRequest(PROMPT, "x", position=40), CFG, "position", "past the prompt"),
    (AttributionRequest("a" * 200, "x"), CFG, "prompt", "the limit is 128"),
    (AttributionRequest(PROMPT, "x", corrupted="hi"), CFG, "corrupted", "as long as the prompt"),
    (AttributionRequest("  ", "x"), CFG, "prompt", "empty"),
])
def test_bad_requests_name_the_field(lm, dicts, request_, cfg, field, words):
    with pytest.raises(AttributionError, match=words) as err:
        attribute(lm, dicts, request_, cfg)
    assert err.value.field == field


def test_saes_of_different_models_or_one_site_twice_are_refused(lm):
    other = [("a", tiny_sae(SITES[0])), ("b", tiny_sae(SITES[1], model="gpt-9"))]
    with pytest.raises(AttributionError, match="b was trained on gpt-9, not tiny"):
        dictionaries(lm.model, lm.name, other)
    with pytest.raises(AttributionError, match=r"two SAEs read layers\.0\.resid_post"):
        dictionaries(lm.model, lm.name, [("a", tiny_sae(SITES[0])), ("b", tiny_sae(SITES[0], seed=1))])
    with pytest.raises(AttributionError, match="out of range"):
        dictionaries(lm.model, lm.name, [("a", tiny_sae("layers.7.resid_post"))])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(AttributionError, match="steps is 0; it must be at least 1"):
        AttributionConfig(steps=0)
    with pytest.raises(AttributionError, match="unknown method"):
        AttributionConfig(method="magic")  # type: ignore[arg-type]


@pytest.mark.parametrize("architecture", ["topk", "jumprelu", "batchtopk"])
def test_every_architecture_attributes(lm, architecture):
    graph = attribute(lm, tiny_dicts(lm, architecture=architecture), REQUEST, AttributionConfig(max_nodes=6))
    assert any(n.kind == "feature" for n in graph.nodes)
