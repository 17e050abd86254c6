"""The one registry of SAE architectures: name -> class, and building an SAE from its config."""

from __future__ import annotations

import torch

from .base import SAE, Runtime, SAEConfig
from .batchtopk import BatchTopKSAE
from .jumprelu import JumpReLUSAE
from .relu import ReLUSAE
from .topk import TopKSAE
from .transcoder import JumpReLUTranscoder, ReLUTranscoder, TopKTranscoder

ARCHITECTURES: dict[str, type[SAE]] = {
    cls.architecture: cls
    for cls in (ReLUSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, TopKTranscoder, JumpReLUTranscoder, ReLUTranscoder)
}


def sae_class(architecture: str) -> type[SAE]:
    """The class registered under `architecture`, or a ValueError naming the known ones."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown SAE architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def takes_k(architecture: str) -> bool:
    """Whether an architecture reads k (active features per token), so a CLI's --k applies to it."""
    return sae_class(architecture).takes_k


def transcodes(architecture: str) -> bool:
    """Whether an architecture is a transcoder, trained on (MLP input, MLP output) pairs rather than one site's rows."""
    return sae_class(architecture).transcodes


def build_sae(cfg: SAEConfig, seed: int = 0, runtime: Runtime | None = None) -> SAE:
    """A freshly initialised SAE of the configured architecture, the same for the same seed."""
    sae = sae_class(cfg.architecture)(cfg, runtime)
    sae.initialize(torch.Generator().manual_seed(seed))
    return sae
