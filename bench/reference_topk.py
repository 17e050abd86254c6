"""A plain PyTorch TopK SAE and its training step, fp32 and dense: the yardstick the fast paths are held to.

The recipe of Gao et al. (OpenAI 2024, "Scaling and evaluating sparse autoencoders"): decoder rows of unit
norm, encoder initialised as the decoder's transpose, b_dec at the data mean, loss = MSE + AuxK/32 with the
d_in/2 largest dead latents reconstructing the residual, Adam at 2e-4 / sqrt(d_sae / 16384), and the
decoder gradient made orthogonal to its rows before each step. No tricks: every op is a dense torch op.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ReferenceTopK(nn.Module):
    """TopK SAE with parameters in SAELens names and shapes."""

    def __init__(self, d_in: int, d_sae: int, k: int, seed: int = 0):
        super().__init__()
        self.k = k
        gen = torch.Generator().manual_seed(seed)
        W_dec_FD = torch.randn(d_sae, d_in, generator=gen)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec_FD)
        self.W_enc = nn.Parameter(W_dec_FD.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def pre_acts(self, x_ND: torch.Tensor) -> torch.Tensor:
        return (x_ND - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Dense [N, d_sae] activations: the k largest pre-activations of each row, rectified."""
        pre_NF = self.pre_acts(x_ND)
        vals_NK, idx_NK = pre_NF.topk(self.k, dim=-1)
        return torch.zeros_like(pre_NF).scatter_(-1, idx_NK, vals_NK.relu())

    def decode(self, f_NF: torch.Tensor) -> torch.Tensor:
        return f_NF @ self.W_dec + self.b_dec


class ReferenceTrainer:
    """Adam on MSE + AuxK; counts tokens since each latent fired to find the dead ones."""

    def __init__(self, sae: ReferenceTopK, lr: float | None = None, dead_after_tokens: int = 10_000_000,
                 aux_k: int | None = None, aux_coefficient: float = 1 / 32, fused: bool = False):
        d_sae, d_in = sae.W_dec.shape
        self.sae = sae
        self.lr = lr or 2e-4 / math.sqrt(d_sae / 16384)
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=self.lr, fused=fused)
        self.dead_after = dead_after_tokens
        self.aux_k = min(aux_k or d_in // 2, d_sae)
        self.aux_coefficient = aux_coefficient
        self.since_fired_F = torch.zeros(d_sae, dtype=torch.long)

    @torch.no_grad()
    def init_b_dec(self, sample_ND: torch.Tensor) -> None:
        self.sae.b_dec.copy_(sample_ND.mean(0))

    def step(self, x_ND: torch.Tensor) -> dict[str, float]:
        """One optimiser step; returns the batch's loss terms."""
        sae = self.sae
        pre_NF = sae.pre_acts(x_ND)
        vals_NK, idx_NK = pre_NF.topk(sae.k, dim=-1)
        f_NF = torch.zeros_like(pre_NF).scatter(-1, idx_NK, vals_NK.relu())
        x_hat_ND = sae.decode(f_NF)
        mse = (x_hat_ND - x_ND).pow(2).sum(-1).mean()
        dead_F = self.since_fired_F >= self.dead_after
        aux = self.aux_loss(pre_NF, dead_F, x_ND - x_hat_ND.detach()) if dead_F.any() else mse.new_zeros(())
        loss = mse + self.aux_coefficient * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.project_decoder_grad()
        self.optimizer.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        fired_F = (f_NF != 0).any(0)
        self.since_fired_F += len(x_ND)
        self.since_fired_F[fired_F] = 0
        return {"mse": mse.item(), "aux": aux.item()}

    def aux_loss(self, pre_NF: torch.Tensor, dead_F: torch.Tensor, residual_ND: torch.Tensor) -> torch.Tensor:
        """Normalised MSE of the dead latents' top-k_aux reconstruction of the residual (OpenAI's AuxK)."""
        k_aux = min(self.aux_k, int(dead_F.sum()))
        masked_NF = pre_NF.masked_fill(~dead_F, -math.inf)
        vals_NK, idx_NK = masked_NF.topk(k_aux, dim=-1)
        f_NF = torch.zeros_like(pre_NF).scatter(-1, idx_NK, vals_NK.relu())
        e_hat_ND = f_NF @ self.sae.W_dec
        return (e_hat_ND - residual_ND).pow(2).sum() / (residual_ND - residual_ND.mean(0)).pow(2).sum()

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each unit decoder row, so Adam moves along the sphere."""
        W_dec_FD, grad_FD = self.sae.W_dec, self.sae.W_dec.grad
        grad_FD -= (grad_FD * W_dec_FD).sum(-1, keepdim=True) * W_dec_FD
