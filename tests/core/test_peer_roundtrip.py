"""SAEs trained by saescope load in SAELens and in sparsify, and compute what saescope computes.

SAELens and sparsify pin other versions of saescope's dependencies, so they live in their own venv
(bench/setup_peers.sh) and run tests/fixtures/load_in_peers.py there. Give that venv's python:

    bash bench/setup_peers.sh /work/benchenv
    SAESCOPE_PEER_PYTHON=/work/benchenv/bin/python .venv/bin/python -m pytest -q tests/core/test_peer_roundtrip.py

Without SAESCOPE_PEER_PYTHON the test is skipped (CI builds no peer venv).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_core.cli import app
from sae_core.saes import load_sae
from sae_core.saes.convert import convert_sae
from tests.conftest import invoke_cli

PEER_PYTHON = os.environ.get("SAESCOPE_PEER_PYTHON")
SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "load_in_peers.py"
ATOL = 1e-5
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")

pytestmark = pytest.mark.skipif(
    not PEER_PYTHON, reason="set SAESCOPE_PEER_PYTHON to a python holding sae-lens and sparsify (bench/setup_peers.sh)")


@pytest.fixture(scope="module")
def peer_results(tmp_path_factory):
    """Each architecture trained by `saescope train` from a bare .npy, then loaded and run by the peer tools."""
    root = tmp_path_factory.mktemp("peers")
    gen = np.random.default_rng(0)
    rows = (gen.standard_normal((3000, 16)) @ gen.standard_normal((16, 16))).astype(np.float32)
    np.save(root / "acts.npy", rows)
    cases = []
    for arch in ARCHITECTURES:
        code, out = invoke_cli(app, "train", "--activations", root / "acts.npy", "--arch", arch, "--features", 48,
                               "--k", 6, "--tokens", 6000, "--batch-size", 200, "--out", root / arch)
        assert code == 0, out
        cases.append({"name": arch, "tool": "saelens", "path": str(root / arch)})
    convert_sae(root / "topk", root / "topk-sparsify", "sparsify")
    cases.append({"name": "topk-sparsify", "tool": "sparsify", "path": str(root / "topk-sparsify")})
    x = torch.from_numpy(rows[-256:]).contiguous()
    save_file({"x": x}, root / "inputs.safetensors")
    (root / "cases.json").write_text(json.dumps(cases))
    run = subprocess.run([PEER_PYTHON, SCRIPT, root / "cases.json", root / "inputs.safetensors", root / "out"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, x


@pytest.mark.parametrize("name", [*ARCHITECTURES, "topk-sparsify"])
def test_the_tool_computes_saescopes_features_and_reconstruction(peer_results, name):
    root, x = peer_results
    theirs = load_file(root / "out" / f"{name}.safetensors")
    ours = load_sae(root / name.removesuffix("-sparsify"))
    with torch.no_grad():
        f = ours.encode(x)
        assert (f > 0).any(), "a dead SAE would compare nothing"
        torch.testing.assert_close(theirs["f"], f, atol=ATOL, rtol=0)
        torch.testing.assert_close(theirs["x_hat"], ours(x), atol=ATOL, rtol=0)


def test_the_sae_trained_from_a_bare_array_names_the_placeholder_hook(peer_results):
    root, _ = peer_results
    cfg = json.loads((root / "relu" / "cfg.json").read_text())
    assert cfg["hook_name"] == "unknown"
