"""Write an SAE in another tool's layout, for that tool's own loader to read (`saescope convert`).

- saelens: cfg.json + sae_weights.safetensors, what `SAE.save` writes (SAELens's `SAE.load_from_disk`).
- sparsify: cfg.json + sae.safetensors as EleutherAI sparsify saves one hookpoint (`SparseCoder.load_from_disk`
  on the directory): encoder.weight [d_sae, d_in], encoder.bias, W_dec [d_sae, d_in], b_dec. sparsify
  computes topk(relu(encoder(x - b_dec))), so only an SAE whose class names a `sparsify_activation` goes there.
- circuit-tracer: a transcoder set (one per layer from 0) as its `transcoder_set` (`circuit_tracer.py`); the
  source is a set directory, or one transcoder of layer 0.
tests/core/test_peer_roundtrip.py loads the first two with the tools themselves and compares reconstructions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..fileio import atomic_write, atomic_write_json
from .artifact import CFG_FILE, WEIGHTS_FILE, SAEFormatError, sae_set_members
from .base import SAE
from .circuit_tracer import CONFIG_FILE, write_circuit_tracer
from .formats import SPARSIFY_WEIGHTS, load_sae


def write_saelens(sae: SAE, directory: Path) -> None:
    sae.save(directory)


def write_sparsify(sae: SAE, directory: Path) -> None:
    """sparsify's layout; an SAE that skips b_dec on the input has it folded into the encoder bias."""
    cfg, activation = sae.cfg, type(sae).sparsify_activation
    if activation is None:
        raise SAEFormatError(f"sparsify computes TopK SAEs only; this SAE is {cfg.architecture}")
    with torch.no_grad():
        W_enc, b_enc = sae.W_enc.float(), sae.b_enc.float()
        if not cfg.apply_b_dec_to_input:  # x @ W + b  ==  (x - b_dec) @ W + (b + b_dec @ W)
            b_enc = b_enc + sae.b_dec.float() @ W_enc
        tensors = {"encoder.weight": W_enc.T, "encoder.bias": b_enc, "W_dec": sae.W_dec.float(),
                   "b_dec": sae.b_dec.float()}
    dtype = getattr(torch, cfg.dtype)
    tensors = {name: t.detach().to(dtype).contiguous() for name, t in tensors.items()}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / SPARSIFY_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(directory / CFG_FILE, {
        "activation": activation, "k": cfg.k, "num_latents": cfg.d_sae,
        "expansion_factor": max(cfg.d_sae // cfg.d_in, 1), "normalize_decoder": type(sae).unit_norm_decoder,
        "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": cfg.d_in,
    })


WRITERS: dict[str, Callable[[SAE, Path], None]] = {"saelens": write_saelens, "sparsify": write_sparsify}
"""Layouts saescope writes one SAE in, by the name `saescope convert --to` takes."""
SET_WRITERS: dict[str, Callable[[list[SAE], Path], object]] = {"circuit-tracer": write_circuit_tracer}
"""Layouts saescope writes a set of SAEs in (one file per member and a listing)."""


def convert_sae(source: str | Path, out: str | Path, to: str) -> list[SAE]:
    """Read the SAE at `source`, or each SAE of a set directory for a set layout, (any layout saescope reads) and
    write them into the empty directory `out`."""
    if to not in WRITERS and to not in SET_WRITERS:
        raise ValueError(f"unknown layout {to!r}; choose one of {', '.join([*WRITERS, *SET_WRITERS])}")
    out = Path(out)
    taken = [name for name in (CFG_FILE, WEIGHTS_FILE, SPARSIFY_WEIGHTS, CONFIG_FILE) if (out / name).exists()]
    if taken:
        raise ValueError(f"{out} already holds an SAE ({', '.join(taken)}): choose an empty directory")
    if to in SET_WRITERS:
        saes = [load_sae(path) for path in (sae_set_members(source) or {"": Path(source)}).values()]
        SET_WRITERS[to](saes, out)
        return saes
    sae = load_sae(source)
    WRITERS[to](sae, out)
    return [sae]
