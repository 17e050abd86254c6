"""saescope convert: what it writes reads back (through saescope's own readers) as the same SAE.

That the tools themselves read it the same way is tests/core/test_peer_roundtrip.py, in their own venv.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from sae_core.saes import SAEConfig, SAEFormatError, build_sae, load_sae
from sae_core.saes.convert import convert_sae


def trained_like(arch: str, apply_b_dec_to_input: bool = True):
    """An SAE with random non-zero weights and biases everywhere (as after training)."""
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=4 if arch in ("topk", "batchtopk") else None,
                    apply_b_dec_to_input=apply_b_dec_to_input)
    sae = build_sae(cfg, seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return sae


@pytest.mark.parametrize("to", ["saelens", "sparsify"])
@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_a_converted_topk_sae_reconstructs_as_before(tmp_path, to, apply_b_dec_to_input):
    sae = trained_like("topk", apply_b_dec_to_input)
    sae.save(tmp_path / "src")
    convert_sae(tmp_path / "src", tmp_path / "out", to)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(load_sae(tmp_path / "out")(x), sae(x), atol=1e-5, rtol=0)


def test_sparsify_config_says_what_its_loader_reads(tmp_path):
    trained_like("topk").save(tmp_path / "src")
    convert_sae(tmp_path / "src", tmp_path / "out", "sparsify")
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert (cfg["activation"], cfg["k"], cfg["num_latents"], cfg["d_in"], cfg["transcode"]) == ("topk", 4, 24, 8, False)


@pytest.mark.parametrize("arch", ["relu", "batchtopk", "jumprelu"])
def test_only_topk_goes_to_sparsify(tmp_path, arch):
    trained_like(arch).save(tmp_path / "src")
    with pytest.raises(SAEFormatError, match=f"this SAE is {arch}"):
        convert_sae(tmp_path / "src", tmp_path / "out", "sparsify")
    assert not (tmp_path / "out").exists()


def test_an_sae_without_a_site_records_the_placeholder_hook_for_saelens(tmp_path):
    sae = trained_like("relu")
    assert sae.cfg.provenance.hook_name is None
    cfg = sae.saelens_cfg()
    assert cfg["hook_name"] == cfg["metadata"]["hook_name"] == "unknown"
    sae.save(tmp_path / "sae")
    assert load_sae(tmp_path / "sae").cfg.provenance == sae.cfg.provenance  # saescope keeps "no site"
    named = replace(sae.cfg.provenance, foreign_hook="blocks.2.hook_mlp_out")
    assert build_sae(replace(sae.cfg, provenance=named)).saelens_cfg()["hook_name"] == "blocks.2.hook_mlp_out"
