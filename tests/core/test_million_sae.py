"""bench/million_sae.py: the wide random SAE it writes is a TopK SAE in the SAELens layout at the asked size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from sae_core.saes import load_sae_and_layout

ROOT = Path(__file__).resolve().parents[2]


def test_the_bench_writes_a_topk_sae_in_the_saelens_layout_of_the_asked_size(tmp_path):
    out = tmp_path / "wide"
    subprocess.run([sys.executable, str(ROOT / "bench" / "million_sae.py"), "--out", str(out), "--features", "300",
                    "--d-in", "24", "--k", "5"], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    sae, layout = load_sae_and_layout(out)
    assert layout.name == "saelens"
    assert (sae.cfg.architecture, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == ("topk", 24, 300, 5)
    assert sae.cfg.provenance.site is not None and sae.cfg.provenance.site.name == "layers.6.resid_post"
    assert torch.allclose(sae.W_dec.norm(dim=1), sae.W_dec.norm(dim=1)[0].expand(300))
    assert (sae.encode(torch.randn(7, 24)) > 0).sum(dim=1).le(5).all()
