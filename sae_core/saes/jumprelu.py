"""JumpReLU SAE (Rajamanoharan et al. 2024; Gemma Scope): a learned threshold per feature, L0 penalty.

The threshold and the L0 count are step functions; their gradients come from straight-through
estimators with a rectangle kernel of width `jumprelu_bandwidth` around the threshold.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SAE, Runtime, SAEConfig, TrainOutput


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    """The kernel K(u) = 1 on |u| < 1/2."""
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """z * H(z - theta); d/dtheta := -(theta / eps) K((z - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre_NF, threshold_F, bandwidth):
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_NF * (pre_NF > threshold_F)

    @staticmethod
    def backward(ctx, grad_NF):
        pre_NF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_NF * (pre_NF > threshold_F)
        kernel_NF = _rectangle((pre_NF - threshold_F) / eps)
        grad_threshold = -(threshold_F / eps) * (kernel_NF * grad_NF).sum(0)
        return grad_pre, grad_threshold.to(threshold_F.dtype), None


class _Step(torch.autograd.Function):
    """H(z - theta); d/dtheta := -(1 / eps) K((z - theta) / eps), no gradient to z (as in the paper)."""

    @staticmethod
    def forward(ctx, pre_NF, threshold_F, bandwidth):
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_NF > threshold_F).to(pre_NF.dtype)

    @staticmethod
    def backward(ctx, grad_NF):
        pre_NF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1 / eps) * (_rectangle((pre_NF - threshold_F) / eps) * grad_NF).sum(0)
        return None, grad_threshold.to(threshold_F.dtype), None


class JumpReLUSAE(SAE):
    """f = z * H(z - theta) with z the pre-activation; loss = MSE + lambda * L0."""

    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    extra_tensors = ("threshold",)

    def __init__(self, cfg: SAEConfig, runtime: Runtime | None = None):
        super().__init__(cfg, runtime)
        self.log_threshold = nn.Parameter(torch.full((self.d_local,), cfg.jumprelu_init_threshold).log())

    @property
    def threshold(self) -> torch.Tensor:
        """Per-feature threshold [d_sae], kept positive by learning its logarithm (as Gemma Scope does)."""
        return self.log_threshold.exp()

    @torch.no_grad()
    def set_threshold_(self, threshold_F: torch.Tensor) -> None:
        """Load a threshold; zeros become the smallest positive float (the same gate in practice)."""
        self.log_threshold.copy_(threshold_F.float().clamp_min(torch.finfo(torch.float32).tiny).log())

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        pre_NF = self.pre_acts(x_ND)
        return pre_NF * (pre_NF > self.threshold)

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        x_ND, y_ND = self.split_rows(x_ND)
        pre_NF = self.pre_acts(x_ND)
        threshold_F = self.threshold
        eps = self.cfg.jumprelu_bandwidth
        f_NF = _JumpReLU.apply(pre_NF, threshold_F.to(pre_NF.dtype), eps)
        x_hat_ND = self.add_skip(self.decode(f_NF), x_ND)
        l0_N = _Step.apply(pre_NF, threshold_F.to(pre_NF.dtype), eps).float().sum(1)
        losses = {
            "mse": self.mse(x_hat_ND, y_ND),
            "l0": sparsity_scale * self.cfg.l0_coefficient * l0_N.mean(),
        }
        active_NF = f_NF > 0
        return TrainOutput(losses, active_NF.any(0), l0_N.detach().mean(), x_hat_ND.detach())

    def _scale_thresholds_(self, factor_F: torch.Tensor) -> None:
        self.log_threshold.add_(factor_F.log())

    def load_tensors_(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors_(tensors)
        self.set_threshold_(tensors["threshold"])
