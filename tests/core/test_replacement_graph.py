"""Replacement-model graphs: influence, circuit-tracer's pruning and scores on graphs worked by hand, and the
graph of a tiny model's prompt built batch by batch in order of influence."""

from __future__ import annotations

import json

import pytest
import torch

from sae_core.attribution.influence import Layout, graph_scores, influence, normalized, prune, threshold_for
from sae_core.attribution.neuronpedia import read_neuronpedia_graph, replacement_graph_json
from sae_core.attribution.replacement import FEATURE, LOGIT, ReplacementModel, Target
from sae_core.attribution.replacement_graph import ReplacementConfig, build_graph, logit_targets
from tests.conftest import invoke_cli
from tests.core.neuronpedia_graph_check import upload_errors
from tests.core.test_replacement import IDS, transcoder
from tests.factories import tiny_model

# Nodes: feature f, error e, embedding t, logit l. t -> f (2), f -> l (3), e -> l (-1).
HAND = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, 0.0, 0.0]])
HAND_LAYOUT = Layout(features=1, errors=1, embeddings=1, logits=1)


def test_influence_and_scores_of_a_graph_worked_by_hand():
    shares = normalized(HAND)
    assert shares[3].tolist() == [0.75, 0.25, 0.0, 0.0] and shares[0].tolist() == [0.0, 0.0, 1.0, 0.0]
    # The logit's shares reach f and e; f passes its 0.75 on to the embedding.
    assert influence(shares, torch.tensor([0.0, 0.0, 0.0, 1.0])).tolist() == [0.75, 0.25, 0.75, 0.0]
    scores = graph_scores(HAND, HAND_LAYOUT, torch.tensor([1.0]))
    assert scores.replacement == pytest.approx(0.75 / (0.75 + 0.25))
    # Every node's input is error-free but the logit's (0.75); weighted by influence plus the logit's weight.
    assert scores.completeness == pytest.approx((0.75 + 0.25 + 0.75 + 0.75) / (0.75 + 0.25 + 0.75 + 1.0))


def test_a_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        influence(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1.0, 0.0]))


def test_the_threshold_keeps_the_fewest_largest_scores_holding_the_share():
    scores = torch.tensor([1.0, 5.0, 2.0, 2.0])
    assert threshold_for(scores, 0.5) == 5.0
    assert threshold_for(scores, 0.6) == 2.0
    assert threshold_for(scores, 1.0) == 1.0


def test_pruning_drops_the_weak_branch_and_keeps_inputs_and_outputs():
    # Two features feed the logit: f0 strongly, f1 weakly; f1's own input is the embedding.
    adjacency = torch.zeros(5, 5)
    adjacency[0, 3] = 1.0   # t -> f0
    adjacency[1, 3] = 1.0   # t -> f1
    adjacency[4, 0] = 10.0  # f0 -> logit
    adjacency[4, 1] = 0.1   # f1 -> logit
    layout = Layout(features=2, errors=1, embeddings=1, logits=1)
    pruned = prune(adjacency, layout, torch.tensor([1.0]), node_threshold=0.8, edge_threshold=0.98)
    assert pruned.nodes.tolist() == [True, False, False, True, True]
    assert pruned.edges[4, 0] and pruned.edges[0, 3] and not pruned.edges[4, 1] and not pruned.edges[1, 3]
    everything = prune(adjacency, layout, torch.tensor([1.0]), node_threshold=1.0, edge_threshold=1.0)
    assert everything.nodes.tolist() == [True, True, False, True, True]  # the error has no edge out
    with pytest.raises(ValueError, match="node_threshold"):
        prune(adjacency, layout, torch.tensor([1.0]), node_threshold=1.5)


@pytest.fixture(scope="module")
def replacement():
    torch.manual_seed(0)
    model = tiny_model("llama").eval().requires_grad_(False)
    return ReplacementModel(model, [transcoder(layer) for layer in range(3)], IDS)


def test_a_whole_graph_holds_every_edge_into_its_nodes(replacement):
    cfg = ReplacementConfig(max_logits=3, logit_probability=1.0, max_feature_nodes=10_000, batch_rows=7)
    graph = build_graph(replacement, cfg)
    layout = graph.layout
    assert graph.adjacency.shape == (layout.size, layout.size) and layout.logits == 3
    assert graph.logit_tokens == replacement.logits_TV[-1].argsort(descending=True)[:3].tolist()
    # Every active feature with a path to a logit was reached; with all of them in, each feature row is complete.
    sources = replacement.sources()
    n_features = layout.features
    assert 0 < n_features <= graph.active_features == int((sources.kind_S == FEATURE).sum())
    row = 5 % n_features
    target = Target(FEATURE, int(graph.feature_layer[row]), int(graph.feature_pos[row]), int(graph.feature_index[row]))
    direct = replacement.edges_into([target], sources)[0]
    chosen = [int(((sources.layer_S == layer) & (sources.pos_S == pos) & (sources.feature_S == index)).nonzero())
              for layer, pos, index in zip(graph.feature_layer, graph.feature_pos, graph.feature_index)]
    assert torch.allclose(graph.adjacency[row, :n_features], direct[chosen])
    logit = replacement.edges_into([Target(LOGIT, 3, len(IDS) - 1, graph.logit_tokens[0])], sources)[0]
    assert torch.allclose(graph.adjacency[-3, :n_features], logit[chosen])
    # Rows hold only earlier layers; errors and embeddings have no inputs.
    assert graph.adjacency[n_features:-3].abs().sum() == 0
    same_or_later = graph.feature_layer[:, None] <= graph.feature_layer[None, :]
    assert graph.adjacency[:n_features, :n_features][same_or_later].abs().sum() == 0
    scores = graph.scores()
    assert 0 < scores.replacement < 1 and 0 < scores.completeness < 1
    pruned = graph.prune()
    assert pruned.nodes[layout.embedding_slice].all() and pruned.nodes[-3:].all()
    assert 0 < int(pruned.nodes[:n_features].sum()) < n_features


def test_a_budget_of_features_takes_the_most_influential_first(replacement):
    small = build_graph(replacement, ReplacementConfig(max_logits=2, max_feature_nodes=4, batch_rows=2))
    assert len(small.feature_index) == 4
    whole = build_graph(replacement, ReplacementConfig(max_logits=2, max_feature_nodes=10_000))
    whole_features = list(zip(whole.feature_layer.tolist(), whole.feature_pos.tolist(), whole.feature_index.tolist()))
    # The first two picked are the two of largest influence through the logit rows alone.
    influence_now = normalized(whole.adjacency[-2:, : len(whole_features)])
    first = (whole.logit_probabilities @ influence_now).argsort(descending=True)[:2].tolist()
    picked = set(zip(small.feature_layer.tolist(), small.feature_pos.tolist(), small.feature_index.tolist()))
    assert {whole_features[i] for i in first} <= picked
    none = build_graph(replacement, ReplacementConfig(max_feature_nodes=0))
    assert len(none.feature_index) == 0 and none.scores().completeness <= 1


def test_logit_nodes_stop_at_the_probability_or_the_count(replacement):
    # The random tiny model's next-token distribution is nearly flat (each token ~0.2%).
    tokens, probs = logit_targets(replacement, ReplacementConfig(max_logits=100, logit_probability=0.02))
    assert float(probs[:-1].sum()) < 0.02 <= float(probs.sum()) + 1e-6 and 2 < len(tokens) < 100
    tokens, _ = logit_targets(replacement, ReplacementConfig(max_logits=2, logit_probability=1.0))
    assert len(tokens) == 2
    with pytest.raises(ValueError, match="max_logits"):
        ReplacementConfig(max_logits=0)


def test_picked_targets_are_the_logit_nodes_weighted_by_their_probabilities(replacement):
    probs = torch.softmax(replacement.logits_TV[-1].double(), -1)
    least, second = probs.argsort()[:2].tolist()
    tokens, weights = logit_targets(replacement, ReplacementConfig(targets=(least, second)))
    assert tokens == [least, second]
    torch.testing.assert_close(weights, probs[[least, second]].float())
    graph = build_graph(replacement, ReplacementConfig(targets=(least,), max_feature_nodes=10))
    assert graph.logit_tokens == [least] and graph.layout.logits == 1
    with pytest.raises(ValueError, match="outside the vocabulary"):
        logit_targets(replacement, ReplacementConfig(targets=(len(probs),)))
    with pytest.raises(ValueError, match="targets"):
        ReplacementConfig(targets=(1, 1))
    with pytest.raises(ValueError, match="targets"):
        ReplacementConfig(max_logits=1, targets=(1, 2))


def test_a_graph_exported_as_neuronpedia_json_reads_back_with_the_same_nodes_and_links(replacement):
    graph = build_graph(replacement, ReplacementConfig(max_logits=3, logit_probability=1.0, max_feature_nodes=40))
    pruned = graph.prune(0.9, 0.99)
    tokens = [f"t{i}" for i in range(len(IDS))]
    data = replacement_graph_json(graph, pruned, tokens, ["a", "b", "c"], "prompt", "tiny-graph", "tiny",
                                  [f"layers.{n}.mlp_in" for n in range(3)], 0.9, 0.99, clerps={"E_0_0": "BOS"})
    assert upload_errors(json.loads(json.dumps(data))) == []
    nodes, links = read_neuronpedia_graph(json.loads(json.dumps(data)))
    layout = graph.layout
    kept = pruned.nodes.nonzero()[:, 0].tolist()
    assert len(nodes) == len(kept) and len(links) == int(pruned.edges.sum()) > 0
    read = {(n.kind, n.layer, n.pos, n.feature) for n in nodes}
    expected = set()
    for n in kept:
        if n < layout.features:
            expected.add(("feature", int(graph.feature_layer[n]), int(graph.feature_pos[n]), int(graph.feature_index[n])))
        elif n < layout.embedding_slice.start:
            expected.add(("error", *divmod(n - layout.features, len(IDS)), None))
        elif n < layout.size - layout.logits:
            expected.add(("embedding", None, n - layout.embedding_slice.start, None))
        else:
            expected.add(("metric", 3, len(IDS) - 1, None))
    assert read == expected
    by_id = {n.node_id: n for n in nodes}
    assert by_id["E_0_0"].clerp == "BOS"
    weights = sorted(w for _, _, w in links)
    assert weights == pytest.approx(sorted(graph.adjacency[pruned.edges].tolist()))
    assert all(s in by_id and t in by_id for s, t, _ in links)
    logit_ids = [n.node_id for n in nodes if n.kind == "metric"]
    assert sorted(logit_ids) == sorted(f"3_{t}_{len(IDS) - 1}" for t in graph.logit_tokens)


def test_the_command_prints_the_graph_and_writes_neuronpedia_json(tiny_model_dir, tmp_path):
    from sae_core.cli import app

    for layer in range(3):
        transcoder(layer).save(tmp_path / "set" / f"layers.{layer}.mlp_in")
    out = tmp_path / "graph.json"
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat", "--max-feature-nodes", 20, "--export", out)
    assert code == 0, text
    assert "outputs: " in text and "replacement score" in text and f"wrote {out}" in text
    data = json.loads(out.read_text())
    assert upload_errors(data) == [] and data["metadata"]["transcoder_list"] == [f"layers.{n}.mlp_in" for n in range(3)]
    assert data["metadata"]["prompt"] == "the cat sat" and any(n["is_target_logit"] for n in data["nodes"])
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat", "--max-feature-nodes", 5, "--pin", "2:3:7=40", "--live-attention")
    assert code == 0 and "with 1 pinned (attention live): " in text, text
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat", "--max-feature-nodes", 5, "--target", "x")
    assert code == 0 and "outputs: 'x' " in text, text
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat", "--target", "xyz")
    assert code != 0 and "the target 'xyz' is 3 tokens" in text, text
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat", "--pin", "2:3=1")
    assert code != 0 and "is not LAYER:POS:FEATURE=VALUE" in text
    (tmp_path / "set" / "layers.1.mlp_in").rename(tmp_path / "elsewhere")
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "set", "--model", tiny_model_dir,
                            "--prompt", "the cat sat")
    assert code != 0 and "no transcoder for layer(s) 1" in text
    code, text = invoke_cli(app, "replacement-graph", "--set", tmp_path / "nothing", "--prompt", "x")
    assert code != 0 and "holds no layers.N.mlp_in folders" in text
