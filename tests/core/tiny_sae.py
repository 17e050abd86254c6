"""A plain ReLU sparse coder for recording tests: just what `records` needs, independent of sae_core.saes."""

from __future__ import annotations

import torch


class TinySAE:
    """encode/decode/W_dec over random weights; activations are >= 0 and often exactly zero."""

    def __init__(self, d_in: int = 32, d_sae: int = 48, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.W_enc = torch.randn(d_in, d_sae, generator=gen) / d_in**0.5
        self.b_enc = torch.zeros(d_sae)
        self.W_dec = torch.randn(d_sae, d_in, generator=gen)
        self.b_dec = torch.zeros(d_in)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.relu(x_ND @ self.W_enc + self.b_enc)

    def decode(self, f_NF: torch.Tensor) -> torch.Tensor:
        return f_NF @ self.W_dec + self.b_dec
