"""A wide random SAE made locally (issue 22): by default 1,048,576 TopK features at SmolLM2's width, saved in
the SAELens layout (cfg.json + sae_weights.safetensors), so importing, recording and browsing a dictionary of
Gemma Scope's size can be measured without downloading one.

The weights are the architecture's own initialisation (unit-norm random decoder rows, encoder as their
transpose, zero biases): a random dictionary fires as sparsely as TopK makes it, which is what the store
and the pages see; what its features mean does not matter to them.

Run: .venv/bin/python bench/million_sae.py --out runs/sae-1m [--features 1048576] [--d-in 576] [--k 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.sites import parse_site

SITE = "layers.6.resid_post"
"""The middle of SmolLM2-135M's 30 layers, the site the other benches read."""


def make_sae(out: Path, *, features: int, d_in: int = 576, k: int = 32, dtype: str = "float32", seed: int = 0) -> Path:
    """Initialise a TopK SAE of `features` features reading `d_in`-wide SmolLM2 activations; save it at `out`."""
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=features, k=k, dtype=dtype,
                    provenance=Provenance(model="smollm2", site=parse_site(SITE)))
    return build_sae(cfg, seed=seed).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the SAE into")
    parser.add_argument("--features", type=int, default=1 << 20)
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    started = time.perf_counter()
    path = make_sae(args.out, features=args.features, d_in=args.d_in, k=args.k, dtype=args.dtype)
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"wrote {args.features} x {args.d_in} TopK SAE (k={args.k}, {args.dtype}) to {path}: "
          f"{size / 1e9:.2f} GB in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
