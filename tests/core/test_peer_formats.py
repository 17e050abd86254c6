"""SAEs written by SAELens, sparsify, dictionary_learning and Gemma Scope load into saescope's SAE and compute
exactly what the tool itself computes.

The fixtures under tests/fixtures/peers were written by the real tools (tests/fixtures/make_peer_fixtures.py,
run in the peer environment): tiny SAEs with non-unit decoder rows, nonzero biases and positive thresholds,
plus each tool's own encode / decode / forward on a fixed batch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_core.saes import SAEFormatError, load_sae

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peers"
ATOL = 1e-5

ARCHITECTURE = {
    "saelens_standard": {"relu"},
    "saelens_topk": {"topk"},
    "saelens_topk_rescaled": {"topk"},
    "saelens_jumprelu": {"jumprelu"},
    "saelens_batchtopk": {"jumprelu"},  # SAELens saves BatchTopK as JumpReLU with a threshold
    "sparsify_topk": {"topk"},
    "dl_autoencoder": {"relu"},
    "dl_topk": {"topk"},
    "dl_batchtopk": {"batchtopk", "jumprelu"},  # inference thresholds at one learned value
    "dl_jumprelu": {"jumprelu"},
    "gemmascope": {"jumprelu"},
}
"""Each fixture and the saescope architectures that reproduce its tool's inference forward."""


@pytest.fixture(scope="module")
def x_ND() -> torch.Tensor:
    return load_file(FIXTURES / "inputs.safetensors")["x"]


def expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "expected" / f"{name}.safetensors")


@pytest.mark.parametrize("name", sorted(ARCHITECTURE))
def test_loads_with_the_tools_shape_and_architecture(name: str):
    sae = load_sae(FIXTURES / name)
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (16, 32)
    assert sae.cfg.architecture in ARCHITECTURE[name]
    assert sae.W_enc.shape == (16, 32) and sae.W_dec.shape == (32, 16)
    if sae.takes_k:
        assert sae.cfg.k == 4


@pytest.mark.parametrize("name", sorted(ARCHITECTURE))
def test_encode_decode_forward_match_the_tool(name: str, x_ND: torch.Tensor):
    sae = load_sae(FIXTURES / name)
    want = expected(name)
    with torch.no_grad():
        f_NF = sae.encode(x_ND)
        torch.testing.assert_close(f_NF, want["f"], atol=ATOL, rtol=0)
        torch.testing.assert_close(sae.decode(want["f"]), want["x_hat"], atol=ATOL, rtol=0)
        torch.testing.assert_close(sae(x_ND), want["forward"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["saelens_standard", "saelens_topk", "saelens_jumprelu", "saelens_batchtopk"])
def test_saelens_site_metadata_is_kept(name: str):
    sae = load_sae(FIXTURES / name)
    assert sae.cfg.provenance.hook_name == "blocks.6.hook_resid_post"
    assert sae.cfg.provenance.site.name == "layers.6.resid_post"
    assert sae.cfg.provenance.model == "tiny-test"


def drop_saelens(directory: Path) -> None:
    path = directory / "sae_weights.safetensors"
    tensors = load_file(path)
    del tensors["W_dec"]
    save_file(tensors, path)


def drop_sparsify(directory: Path) -> None:
    path = directory / "sae.safetensors"
    tensors = load_file(path)
    del tensors["W_dec"]
    save_file(tensors, path)


def drop_dictionary_learning(directory: Path) -> None:
    path = directory / "ae.pt"
    state = torch.load(path, weights_only=True)
    del state["decoder.weight"]
    torch.save(state, path)


def drop_gemmascope(directory: Path) -> None:
    path = directory / "params.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data if key != "W_dec"}
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("name", "damage"),
    [("saelens_topk", drop_saelens), ("sparsify_topk", drop_sparsify), ("dl_topk", drop_dictionary_learning),
     ("gemmascope", drop_gemmascope)],
)
def test_a_missing_tensor_is_a_clear_format_error(name: str, damage, tmp_path: Path):
    copy = shutil.copytree(FIXTURES / name, tmp_path / name)
    damage(copy)
    with pytest.raises(SAEFormatError, match=r"W_dec|decoder"):
        load_sae(copy)
