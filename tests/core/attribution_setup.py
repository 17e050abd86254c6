"""Tiny models and SAEs for the attribution tests: three residual sites, SAEs with mostly-active features."""

from __future__ import annotations

import torch

from sae_core.attribution import Dictionary, dictionaries
from sae_core.lm import LoadedModel
from sae_core.provenance import Provenance
from sae_core.saes import SAE, SAEConfig, build_sae, takes_k
from sae_core.sites import parse_site
from tests.factories import tiny_model, tiny_tokenizer

SITES = ("layers.0.resid_post", "layers.1.resid_post", "layers.2.resid_post")


def tiny_lm(seed: int = 0) -> LoadedModel:
    return LoadedModel(tiny_model("llama", layers=3, seed=seed), tiny_tokenizer(), "tiny")


def tiny_sae(site: str, architecture: str = "relu", model: str = "tiny", seed: int = 0, d_sae: int = 48) -> SAE:
    """An SAE whose encoder is its decoder's transpose, so many features fire and errors stay small."""
    k = 8 if takes_k(architecture) else None
    cfg = SAEConfig(architecture=architecture, d_in=32, d_sae=d_sae, k=k, jumprelu_init_threshold=1e-3,
                    provenance=Provenance(model=model, site=parse_site(site)))
    sae = build_sae(cfg, seed).requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, 32, generator=generator) / 32**0.5
    sae.W_dec.copy_(W_dec)
    sae.W_enc.copy_(W_dec.T)
    sae.b_enc.copy_(torch.randn(d_sae, generator=generator) * 0.01)
    sae.b_dec.copy_(torch.randn(32, generator=generator) * 0.01)
    return sae


def tiny_dicts(lm: LoadedModel, sites: tuple[str, ...] = SITES, architecture: str = "relu") -> list[Dictionary]:
    saes = [(f"sae{i}", tiny_sae(site, architecture, seed=i)) for i, site in enumerate(sites)]
    return dictionaries(lm.model, lm.name, saes)
