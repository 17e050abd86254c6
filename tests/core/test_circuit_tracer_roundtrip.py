"""Transcoder sets that `saescope convert --to circuit-tracer` writes load with circuit-tracer's own loader, and
circuit-tracer computes with them what saescope computes.

circuit-tracer pins other versions of saescope's dependencies (transformers, TransformerLens), so it lives in its
own venv and runs tests/fixtures/load_in_circuit_tracer.py there. Build it and give its python:

    bash bench/setup_circuit_tracer.sh /work/ctenv
    SAESCOPE_CIRCUIT_TRACER_PYTHON=/work/ctenv/bin/python .venv/bin/python -m pytest -q \
        tests/core/test_circuit_tracer_roundtrip.py

Without SAESCOPE_CIRCUIT_TRACER_PYTHON the test is skipped (CI builds no circuit-tracer venv).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_core.activations import open_activations
from sae_core.attribution.influence import Layout, graph_scores, prune
from sae_core.attribution.replacement import ReplacementModel
from sae_core.attribution.replacement_graph import ReplacementConfig, build_graph
from sae_core.cli import app
from sae_core.config import HarvestConfig
from sae_core.harvest import harvest
from sae_core.hooks import truncated_forward_sites
from sae_core.lm import load_model
from sae_core.saes import SAE, load_sae
from sae_core.sites import Site
from tests.conftest import invoke_cli

CT_PYTHON = os.environ.get("SAESCOPE_CIRCUIT_TRACER_PYTHON")
SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "load_in_circuit_tracer.py"
TOL = 1e-5
"""Largest difference allowed, as a fraction of the largest magnitude compared."""
LAYERS = 3
SETS = {"relu-skip": ("relu_transcoder", "--l1", 0.05, "--skip"), "jumprelu": ("jumprelu_transcoder", "--l0", 0.005)}
"""Each set: its architecture and training options (ReLU with the skip term, JumpReLU with its threshold)."""

pytestmark = pytest.mark.skipif(
    not CT_PYTHON,
    reason="set SAESCOPE_CIRCUIT_TRACER_PYTHON to a python holding circuit-tracer (bench/setup_circuit_tracer.sh)")


@pytest.fixture(scope="module")
def circuit_tracer_results(tmp_path_factory, tiny_model_dir, corpus):
    """Each set trained by `saescope train` on the tiny Llama's MLPs, exported by `saescope convert`, loaded and run
    by circuit-tracer; the inputs are held-out MLP inputs of each layer."""
    root = tmp_path_factory.mktemp("circuit-tracer")
    cfg = HarvestConfig(model=str(tiny_model_dir), site=f"layers.0-{LAYERS - 1}.mlp", dataset=corpus, tokens=3000,
                        context_len=32, batch_size=8, dtype="float32")
    harvest(cfg, root / "h", lm=load_model(str(tiny_model_dir)), progress=False)
    cache = root / "ct-cache"
    model = root / "lm"  # TransformerLens reads a local model's config only where its path does not name llama
    model.symlink_to(tiny_model_dir, target_is_directory=True)
    cases = []
    for name, (arch, *options) in SETS.items():
        code, out = invoke_cli(app, "train", "--activations", root / "h", "--out", root / name, "--arch", arch,
                               "--features", 64, "--tokens", 20000, "--batch-size", 256, "--dtype", "float32",
                               "--holdout", 300, *options)
        assert code == 0, out
        code, out = invoke_cli(app, "convert", "--sae", root / name, "--to", "circuit-tracer",
                               "--out", cache / "saescope" / name)
        assert code == 0, out
        cases.append({"name": name, "ref": f"saescope/{name}", "cache_dir": str(cache), "model": str(model)})
    x = torch.stack([open_activations(root / "h" / f"layers.{layer}.mlp_in").head(3000)[-256:]
                     for layer in range(LAYERS)]).contiguous()
    tokens = torch.tensor([[0, *range(20, 200, 12)]])  # BOS, then words of the tiny vocabulary
    save_file({"x": x, "tokens": tokens}, root / "inputs.safetensors")
    (root / "cases.json").write_text(json.dumps(cases))
    run = subprocess.run([CT_PYTHON, SCRIPT, root / "cases.json", root / "inputs.safetensors", root / "out"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, x, tokens, load_model(str(tiny_model_dir)).model


def trained(directory: Path) -> list[SAE]:
    """The set as saescope trained it (not read back from the export, which would hide a mistake made both ways)."""
    return [load_sae(directory / f"layers.{layer}.mlp_in") for layer in range(LAYERS)]


@pytest.mark.parametrize("name", SETS)
def test_circuit_tracer_computes_saescopes_features_and_reconstruction(circuit_tracer_results, name):
    root, x, _, _ = circuit_tracer_results
    theirs = load_file(root / "out" / f"{name}.safetensors")
    ours = trained(root / name)
    with torch.no_grad():
        f = torch.stack([sae.encode(x[layer]) for layer, sae in enumerate(ours)])
        x_hat = torch.stack([sae(x[layer]) for layer, sae in enumerate(ours)])
    assert (f > 0).any(), "a dead set would compare nothing"
    for suffix in ("", "_sparse"):  # the dense encode/decode, and the sparse path attribution takes
        assert_matches(theirs["f" + suffix], f)
        assert_matches(theirs["x_hat" + suffix], x_hat)


@pytest.mark.parametrize("name", SETS)
def test_circuit_tracers_replacement_model_feeds_each_transcoder_saescopes_site(circuit_tracer_results, name):
    """The config's hook names put each transcoder where saescope trained it: in circuit-tracer's ReplacementModel of
    the same model, the activation at `feature_input_hook` is saescope's `mlp_in` site, and the features circuit-tracer
    computes there, and those of its attribution graph, are ours (bar the first position, which it zeroes)."""
    root, _, tokens, lm = circuit_tracer_results
    theirs = load_file(root / "out" / f"{name}.safetensors")
    with torch.no_grad():
        mlp_in = torch.stack(truncated_forward_sites(lm, [Site(layer, "mlp_in") for layer in range(LAYERS)], tokens))[:, 0]
        f = torch.stack([sae.encode(mlp_in[layer]) for layer, sae in enumerate(trained(root / name))])
    assert_matches(theirs["model_mlp_in"], mlp_in)
    assert (f[:, 1:] > 0).any()
    assert_matches(theirs["model_f"][:, 1:], f[:, 1:])
    assert_matches(theirs["graph_f"][:, 1:], f[:, 1:])  # the attribution graph has a node for each active feature


@pytest.mark.parametrize("name", SETS)
def test_circuit_tracers_graph_has_saescopes_edges_and_its_influence_math_is_ours(circuit_tracer_results, name):
    """Our replacement-model graph of the prompt holds circuit-tracer's edges, and our influence, pruning and
    scores computed on circuit-tracer's own adjacency are its. circuit-tracer zeroes the features of the first
    position (its error there takes them in), so sources at position 0 other than the embedding are left out; and
    it keeps every active feature, where we leave out those with no path to a logit (no edge out)."""
    root, _, tokens, lm = circuit_tracer_results
    theirs = load_file(root / "out" / f"{name}.safetensors")
    graph = build_graph(ReplacementModel(lm, trained(root / name), tokens[0]),
                        ReplacementConfig(max_logits=3, logit_probability=0.95, max_feature_nodes=10**6))
    assert graph.logit_tokens == theirs["graph_logits"].long().tolist()
    n_pos, ours_layout = tokens.shape[1], graph.layout
    their_features = [tuple(f) for f in theirs["graph_features"].long().tolist()]
    our_features = list(zip(graph.feature_layer.tolist(), graph.feature_pos.tolist(), graph.feature_index.tolist()))
    ours_at = {f: i for i, f in enumerate(our_features)}
    n_theirs = len(their_features)
    assert {f for f in our_features if f[1] > 0} <= set(their_features)
    unreached = torch.tensor([f not in ours_at for f in their_features])
    assert unreached.sum() < n_theirs and theirs["graph_adjacency"][:, :n_theirs][:, unreached].abs().max() == 0

    def ours_of(n: int) -> int | None:
        """Our node index of their node n, None for a position-0 error or a feature with no edge out."""
        if n < n_theirs:
            return ours_at.get(their_features[n])
        n -= n_theirs
        if n < LAYERS * n_pos:
            return None if n % n_pos == 0 else ours_layout.features + n
        return ours_layout.features + n  # embeddings, then logits, in the same order
    pairs = [(n, m) for n in range(len(theirs["graph_adjacency"])) if (m := ours_of(n)) is not None]
    t_idx, o_idx = torch.tensor([n for n, _ in pairs]), torch.tensor([m for _, m in pairs])
    compared = graph.adjacency[o_idx][:, o_idx]
    assert int((compared[:n_theirs, :n_theirs] != 0).sum()) > 20  # feature-to-feature edges among them
    assert_matches(theirs["graph_adjacency"][t_idx][:, t_idx], compared)
    layout = Layout(n_theirs, LAYERS * n_pos, n_pos, len(graph.logit_tokens))
    scores = graph_scores(theirs["graph_adjacency"], layout, theirs["graph_logit_p"])
    assert [scores.replacement, scores.completeness] == pytest.approx(theirs["scores"].tolist(), abs=1e-5)
    pruned = prune(theirs["graph_adjacency"], layout, theirs["graph_logit_p"], 0.8, 0.98)
    assert torch.equal(pruned.nodes, theirs["pruned_nodes"].bool())
    assert torch.equal(pruned.edges, theirs["pruned_edges"].bool() & (theirs["graph_adjacency"] != 0))
    assert_matches(theirs["pruned_cumulative"], pruned.cumulative)


def assert_matches(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    """Equal within TOL of ours's largest magnitude: the tiny Llama's MLP outputs are a few 1e-3, so a fixed
    bound such as 1e-5 would pass a reconstruction off by a percent."""
    torch.testing.assert_close(theirs, ours, atol=TOL * float(ours.abs().max()), rtol=0)
