"""BatchTopK SAE (Bussmann et al. 2024): the N*k largest activations across the batch, saved as JumpReLU.

At inference one global threshold (the running mean of the smallest activation the batch selection
kept) replaces the batch selection, so the saved SAE is a JumpReLU SAE, as SAELens saves it.
"""

from __future__ import annotations

import torch

from .base import SAE, Runtime, SAEConfig, TrainOutput
from .sparse import SparseActs
from .topk import train_topk_family

THRESHOLD_MOMENTUM = 0.01
"""Weight of each batch in the threshold's running mean (SAELens uses the same rate)."""


class BatchTopKSAE(SAE):
    """k active features per token on average over the batch; a threshold at inference."""

    architecture = "batchtopk"
    saelens_architecture = "jumprelu"
    takes_k = True
    extra_tensors = ("threshold",)

    def __init__(self, cfg: SAEConfig, runtime: Runtime | None = None):
        if cfg.k is None:
            raise ValueError("a batchtopk SAE needs k (mean active features per token)")
        super().__init__(cfg, runtime)
        self.k: int = cfg.k
        self.threshold: torch.Tensor
        self.register_buffer("threshold", torch.zeros(self.d_local))

    def select(self, pre_NF: torch.Tensor) -> SparseActs:
        """The N*k largest rectified pre-activations anywhere in the batch (over every rank's rows)."""
        n, d_sae = pre_NF.shape
        batch = self.runtime.batch
        total = n * self.k * batch.world
        # One rank may hold all of the global winners, so each offers up to the global count.
        vals_M, flat_M = pre_NF.relu().flatten().topk(min(total, n * d_sae), sorted=False)
        if batch.active:
            won_M = batch.top_mask(vals_M, total)
            vals_M, flat_M = vals_M[won_M], flat_M[won_M]
        return SparseActs.from_flat(vals_M, flat_M, n, d_sae)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        pre_NF = self.pre_acts(x_ND)
        return pre_NF * (pre_NF > self.threshold)

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        return train_topk_family(self, x_ND, self.select_and_track, dead_F)

    def select_and_track(self, pre_NF: torch.Tensor) -> SparseActs:
        """Select, and move the inference threshold towards the smallest positive value selected."""
        acts = self.select(pre_NF)
        with torch.no_grad():
            positive = acts.vals_M[acts.vals_M > 0]
            smallest = self.runtime.batch.min(positive.min().float() if len(positive) else pre_NF.new_tensor(torch.inf).float())
            if smallest.isfinite():
                self.threshold.lerp_(smallest.expand_as(self.threshold), THRESHOLD_MOMENTUM)
        return acts

    def _scale_thresholds_(self, factor_F: torch.Tensor) -> None:
        self.threshold.mul_(factor_F)

    @torch.no_grad()
    def load_tensors_(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors_(tensors)
        self.threshold.copy_(tensors["threshold"].float())
