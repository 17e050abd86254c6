"""Sparse feature activations and the kernels that train on them without dense [N, d_sae] gradients.

A TopK-style step needs one dense matmul (the encoder's pre-activations). Everything after it touches
only the N*k selected (row, feature) pairs: the decoder is an `embedding_bag` over W_dec rows, and the
encoder's gradient is the same gather-and-scatter over W_enc columns. That replaces four of the five
dense matmuls of the plain step with O(N*k*d) work (the idea behind OpenAI's and sparsify's kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distributed import Dist


@dataclass(frozen=True)
class SparseActs:
    """M selected activations of an [N, d_sae] matrix, grouped by row (rows ascending)."""

    vals_M: torch.Tensor
    """Activation values (>= 0), float32."""
    cols_M: torch.Tensor
    """Feature index of each value, int64."""
    rows_M: torch.Tensor
    """Row index of each value, int64, non-decreasing."""
    offsets_N: torch.Tensor
    """Start of each row's values in the flat arrays (embedding_bag's offsets)."""

    @classmethod
    def from_rows(cls, vals_NK: torch.Tensor, idx_NK: torch.Tensor) -> SparseActs:
        """The same number K of values in every row."""
        n, k = idx_NK.shape
        rows = torch.arange(n, device=idx_NK.device)
        return cls(vals_NK.reshape(-1).float(), idx_NK.reshape(-1), rows.repeat_interleave(k), rows * k)

    @classmethod
    def from_flat(cls, vals_M: torch.Tensor, flat_M: torch.Tensor, n_rows: int, d_sae: int) -> SparseActs:
        """Values picked anywhere in the matrix, given as flat indices row * d_sae + col."""
        flat_M, order = flat_M.sort()
        rows = flat_M // d_sae
        counts = torch.bincount(rows, minlength=n_rows)
        offsets = counts.cumsum(0) - counts
        return cls(vals_M[order].float(), flat_M % d_sae, rows, offsets)

    def with_vals(self, vals_M: torch.Tensor) -> SparseActs:
        """The same positions holding other values (e.g. ones that carry a gradient)."""
        return SparseActs(vals_M, self.cols_M, self.rows_M, self.offsets_N)

    def dense(self, d_sae: int) -> torch.Tensor:
        """The [N, d_sae] matrix, zeros off the selected positions."""
        out = self.vals_M.new_zeros(len(self.offsets_N), d_sae)
        return out.index_put((self.rows_M, self.cols_M), self.vals_M)

    def l0(self, n_rows: int) -> torch.Tensor:
        """Mean number of nonzero activations per row."""
        return (self.vals_M > 0).sum() / n_rows

    def fired(self, d_sae: int) -> torch.Tensor:
        """Bool [d_sae]: features with a nonzero activation somewhere in the batch."""
        fired_F = torch.zeros(d_sae, dtype=torch.bool, device=self.cols_M.device)
        return fired_F.index_fill_(0, self.cols_M[self.vals_M > 0], True)


def sparse_decode(acts: SparseActs, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_m vals[m] * W_dec[cols[m]] per row, [N, d]; autograd reaches vals and only the used W_dec rows."""
    return F.embedding_bag(acts.cols_M, W_dec_FD, acts.offsets_N, mode="sum", per_sample_weights=acts.vals_M)


class _EncoderGrad(torch.autograd.Function):
    """Identity on the selected values, whose backward is the encoder's gradient at those positions only.

    pre[n, c] = x_in[n] . W_enc[:, c] + b_enc[c], and ReLU passes gradient where the value is positive.
    One embedding_bag over W_enc^T weighted by the incoming gradient gives dL/dx_in; its own backward,
    against x_in, gives dL/dW_enc for the touched columns.
    """

    @staticmethod
    def forward(ctx, vals_M, x_in_ND, W_enc_DF, b_enc_F, cols_M, offsets_N):
        ctx.save_for_backward(x_in_ND, W_enc_DF, cols_M, offsets_N, vals_M > 0)
        return vals_M.clone()

    @staticmethod
    def backward(ctx, grad_M):
        x_in_ND, W_enc_DF, cols_M, offsets_N, active_M = ctx.saved_tensors
        grad_M = torch.where(active_M, grad_M, 0.0)
        grad_b_F = torch.zeros_like(W_enc_DF[0]).index_add_(0, cols_M, grad_M)
        with torch.enable_grad():
            W_FD = W_enc_DF.detach().T.contiguous().requires_grad_()
            grad_x_ND = F.embedding_bag(cols_M, W_FD, offsets_N, mode="sum", per_sample_weights=grad_M)
            (grad_W_FD,) = torch.autograd.grad(grad_x_ND, W_FD, grad_outputs=x_in_ND.detach())
        return None, grad_x_ND.detach(), grad_W_FD.T, grad_b_F, None, None


def attach_encoder_grad(acts: SparseActs, x_in_ND: torch.Tensor, W_enc_DF: torch.Tensor, b_enc_F: torch.Tensor) -> SparseActs:
    """Give values selected from detached pre-activations the gradient they would have had."""
    vals = _EncoderGrad.apply(acts.vals_M, x_in_ND, W_enc_DF, b_enc_F, acts.cols_M, acts.offsets_N)
    return acts.with_vals(vals)


Selector = Callable[[torch.Tensor], SparseActs]


def top_dead(pre_NF: torch.Tensor, dead_F: torch.Tensor, n_aux: int, shards: Dist = Dist()) -> SparseActs:
    """The largest pre-activations of dead features in each row, rectified (AuxK's latents).

    With features split over `shards`, the largest over every shard's dead features (see `top_of_shards`).
    """
    k = min(n_aux, int(shards.sum(dead_F.sum())))
    vals_NK, idx_NK = pre_NF.masked_fill(~dead_F, float("-inf")).topk(min(k, pre_NF.shape[1]), dim=-1, sorted=False)
    return top_of_shards(vals_NK, idx_NK, k, shards)


def top_of_shards(vals_NK: torch.Tensor, idx_NK: torch.Tensor, k: int, shards: Dist) -> SparseActs:
    """Rectified row-wise top-k over all shards, from each shard's own top candidates.

    Every shard's candidates are gathered and the global k per row picked; a shard keeps its winners and
    zeroes its losers (a zero is inactive everywhere: no decode, no gradient, not fired), so every row
    keeps its fixed width. One shard (the unsharded SAE) keeps its candidates as they are.
    """
    if shards.active:
        vals_NK = vals_NK.masked_fill(~shards.top_mask(vals_NK, k), 0.0)
    return SparseActs.from_rows(vals_NK.relu(), idx_NK)
