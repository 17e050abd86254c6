"""Reconstruction and sparsity metrics, accumulated so that results do not depend on the batch size.

FVU is the squared error over the variance around the data's mean, both summed over the whole
evaluation set (not averaged per batch: per-batch ratios, or variance around zero, are the mistakes
peers have shipped). Sums are kept in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

DENSE_FIRING_RATE = 0.1
"""A feature firing on more than this fraction of tokens counts as dense."""


@dataclass
class ReconstructionStats:
    """Running sums over batches of (input, reconstruction, features)."""

    rows: int = 0
    sum_x_D: torch.Tensor | None = None
    sum_sq_norm: float = 0.0
    sum_sq_err: float = 0.0
    active: int = 0
    fired_count_F: torch.Tensor | None = field(default=None, repr=False)

    def add(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor, f_NF: torch.Tensor | None = None,
            fired_count_F: torch.Tensor | None = None) -> ReconstructionStats:
        """Fold in one batch; feature activations (`f_NF`), or how many of the rows each feature fired on, enable
        the sparsity metrics."""
        x = x_ND.double()
        self.rows += len(x)
        self.sum_x_D = x.sum(0) if self.sum_x_D is None else self.sum_x_D + x.sum(0)
        self.sum_sq_norm += float(x.pow(2).sum())
        self.sum_sq_err += float((x_hat_ND.double() - x).pow(2).sum())
        counts = (f_NF != 0).sum(0) if f_NF is not None else fired_count_F
        if counts is None:
            return self
        self.active += int(counts.sum())
        self.fired_count_F = counts if self.fired_count_F is None else self.fired_count_F + counts
        return self

    def _sum_x(self) -> torch.Tensor:
        if self.sum_x_D is None:
            raise ValueError("no rows were evaluated")
        return self.sum_x_D

    @property
    def total_variance(self) -> float:
        """Sum over rows of |x - mean|^2."""
        mean_sq = float(self._sum_x().pow(2).sum()) / self.rows
        return self.sum_sq_norm - mean_sq

    def summary(self) -> dict[str, float | int]:
        """mse (per element), fvu, explained variance and, with features, l0 and dead/dense fractions."""
        if self.rows == 0:
            raise ValueError("no rows were evaluated")
        fvu = self.sum_sq_err / max(self.total_variance, 1e-30)
        out: dict[str, float | int] = {
            "rows": self.rows,
            "mse": self.sum_sq_err / (self.rows * len(self._sum_x())),
            "fvu": fvu,
            "explained_variance": 1 - fvu,
        }
        if self.fired_count_F is not None:
            rate_F = self.fired_count_F.double() / self.rows
            out.update(
                l0=self.active / self.rows,
                dead_fraction=float((self.fired_count_F == 0).double().mean()),
                dense_fraction=float((rate_F > DENSE_FIRING_RATE).double().mean()),
            )
        return out


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """How much of the loss gap from zero-ablating the site the SAE closes: 1 is perfect, 0 is no better."""
    gap = ce_zero - ce_clean
    if gap == 0:
        raise ValueError("zero-ablating the site does not change the loss; CE loss recovered is undefined")
    return (ce_zero - ce_sae) / gap
