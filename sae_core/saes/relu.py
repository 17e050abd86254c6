"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates", April 2024)."""

from __future__ import annotations

import torch

from .base import SAE, TrainOutput


class ReLUSAE(SAE):
    """f = ReLU(W_enc (x - b_dec) + b_enc); loss = MSE + lambda * sum_i f_i |W_dec,i|, lambda warmed up."""

    architecture = "relu"
    saelens_architecture = "standard"
    unit_norm_decoder = False
    init_decoder_norm = 0.1

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.pre_acts(x_ND).relu()

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        x_ND, y_ND = self.split_rows(x_ND)
        f_NF = self.encode(x_ND)
        x_hat_ND = self.add_skip(self.decode(f_NF), x_ND)
        weighted_l1 = (f_NF.float() @ self.W_dec.norm(dim=1)).mean()
        losses = {
            "mse": self.mse(x_hat_ND, y_ND),
            "l1": sparsity_scale * self.cfg.l1_coefficient * weighted_l1,
        }
        active_NF = f_NF > 0
        return TrainOutput(losses, active_NF.any(0), active_NF.sum(1).float().mean(), x_hat_ND.detach())
