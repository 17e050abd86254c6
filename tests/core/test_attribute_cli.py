"""`saescope attribute` on a saved tiny Llama and SAEs saved in saescope's layout."""

from __future__ import annotations

import json
from functools import partial

import pytest

from sae_core.cli import app
from tests.conftest import invoke_cli
from tests.core.attribution_setup import SITES, tiny_sae

invoke = partial(invoke_cli, app)


@pytest.fixture(scope="module")
def sae_dirs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("attr-saes")
    return ",".join(str(tiny_sae(site, model=tiny_model_dir.name, seed=i).save(root / f"sae{i}"))
                    for i, site in enumerate(SITES))


def test_attribute_prints_the_top_nodes_with_estimates_and_exact_effects(tiny_model_dir, sae_dirs, tmp_path):
    out_file = tmp_path / "graph.json"
    code, out = invoke("attribute", "--model", tiny_model_dir, "--sae", sae_dirs, "--prompt", "hello world",
                       "--target", "x", "--top", 5, "--verify", 5, "--export", out_file)
    assert code == 0, out
    assert "metric: log-probability of 'x' at position 11" in out
    table = out[out.index("rank"):].splitlines()
    assert len([line for line in table if line[:1].isdigit()]) == 5
    exported = json.loads(out_file.read_text())
    assert exported["metadata"]["prompt"] == "hello world" and exported["links"]


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
