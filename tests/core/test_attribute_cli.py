"""`saescope attribute` on a saved tiny Llama and SAEs saved in saescope's layout."""

from __future__ import annotations

import json
from functools import partial

import pytest

from sae_core.cli import app
from tests.conftest import invoke_cli
from tests.core.attribution_setup import SITES, tiny_sae
from tests.core.neuronpedia_graph_check import upload_errors

invoke = partial(invoke_cli, app)


@pytest.fixture(scope="module")
def sae_dirs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("attr-saes")
    return ",".join(str(tiny_sae(site, model=tiny_model_dir.name, seed=i).save(root / f"sae{i}"))
                    for i, site in enumerate(SITES))


def test_attribute_prints_the_top_nodes_with_estimates_and_exact_effects(tiny_model_dir, sae_dirs, tmp_path):
    out_file = tmp_path / "my graph.json"
    code, out = invoke("attribute", "--model", tiny_model_dir, "--sae", sae_dirs, "--prompt", "hello world",
                       "--target", "x", "--top", 5, "--verify", 5, "--export", out_file)
    assert code == 0, out
    assert "metric: log-probability of 'x' at position 11" in out
    table = out[out.index("rank"):].splitlines()
    assert len([line for line in table if line[:1].isdigit()]) == 5
    exported = json.loads(out_file.read_text())
    assert exported["metadata"]["prompt"] == "hello world" and exported["links"]
    assert upload_errors(exported) == []
    assert (exported["metadata"]["scan"], exported["metadata"]["slug"]) == (tiny_model_dir.name.lower(), "my-graph")


def test_the_export_takes_neuronpedias_model_id_and_refuses_one_it_would_refuse(tiny_model_dir, sae_dirs, tmp_path):
    out_file = tmp_path / "graph.json"
    args = ("attribute", "--model", tiny_model_dir, "--sae", sae_dirs, "--prompt", "hello world", "--target", "x",
            "--export", out_file, "--model-id")
    code, out = invoke(*args, "gpt2-small")
    assert code == 0, out
    assert json.loads(out_file.read_text())["metadata"]["scan"] == "gpt2-small"
    out_file.unlink()
    code, out = invoke(*args, "openai/gpt2")
    assert code == 2 and "error: the graph's scan 'openai/gpt2' may hold only" in out and not out_file.exists()


def test_without_a_target_the_top_next_tokens_are_offered(tiny_model_dir, sae_dirs):
    code, out = invoke("attribute", "--model", tiny_model_dir, "--sae", sae_dirs, "--prompt", "hello world")
    assert code == 0, out
    assert "give --target; the model's top next tokens:" in out
    offered = out[out.index("next tokens:"):].strip().splitlines()[1:]
    assert len(offered) == 10 and all(float(line.rsplit("\t", 1)[1]) > 0 for line in offered)


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "xy"], "error: the target 'xy' is 2 tokens"),
    (["--target", "x", "--method", "magic"], "error: unknown method 'magic'"),
    (["--target", "x", "--position", "99"], "error: position 99 is past the prompt's 12 tokens"),
])
def test_bad_input_is_one_line(tiny_model_dir, sae_dirs, args, message):
    code, out = invoke("attribute", "--model", tiny_model_dir, "--sae", sae_dirs, "--prompt", "hello world", *args)
    assert code == 2
    assert message in out
