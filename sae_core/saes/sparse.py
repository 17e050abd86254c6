"""Sparse feature activations and the kernels that train on them without dense [N, d_sae] gradients.

A TopK-style step needs one dense matmul (the encoder's pre-activations). Everything after it touches
only the N*k selected (row, feature) pairs: the decoder is an `embedding_bag` over W_dec rows, and both
weight gradients are `embedding_bag`s too, over the rows of the batch grouped by feature (`FeatureOrder`).
That replaces four of the five dense matmuls of the plain step with O(N*k*d) work (the idea behind
OpenAI's and sparsify's kernels). `bench/train_step.py` times each piece against the dense matmul.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import kernels
from ..distributed import Dist


@dataclass(frozen=True)
class FeatureOrder:
    """The selected pairs regrouped by feature: what turns a weight gradient into one `embedding_bag`."""

    order_M: torch.Tensor
    """Positions of the pairs sorted by feature (stable: rows ascending within a feature, so sums are deterministic)."""
    rows_M: torch.Tensor
    """The row of each pair in that order."""
    offsets_F: torch.Tensor
    """Start of each feature's pairs in that order (empty features start where the next does)."""

    def weighted_rows(self, rows_ND: torch.Tensor, weights_M: torch.Tensor) -> torch.Tensor:
        """[d_sae, d]: for each feature, the sum of weight x row over the pairs that select it."""
        return F.embedding_bag(self.rows_M, rows_ND, self.offsets_F, mode="sum",
                               per_sample_weights=weights_M[self.order_M].to(rows_ND.dtype))


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
    _by_feature: dict[int, FeatureOrder] = field(default_factory=dict, compare=False, repr=False)
    """`by_feature`'s result, shared with every `with_vals` copy: one sort serves the decoder and the encoder."""

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
        return SparseActs(vals_M, self.cols_M, self.rows_M, self.offsets_N, self._by_feature)

    def by_feature(self, d_sae: int) -> FeatureOrder:
        """The pairs grouped by feature, sorted once per selection."""
        if d_sae not in self._by_feature:
            cols_M, order_M = self.cols_M.sort(stable=True)
            counts_F = torch.bincount(cols_M, minlength=d_sae)
            self._by_feature[d_sae] = FeatureOrder(order_M, self.rows_M[order_M], counts_F.cumsum(0) - counts_F)
        return self._by_feature[d_sae]

    def dense(self, d_sae: int) -> torch.Tensor:
        """The [N, d_sae] matrix, zeros off the selected positions."""
        out = self.vals_M.new_zeros(len(self.offsets_N), d_sae)
        return out.index_put((self.rows_M, self.cols_M), self.vals_M)

    def l0(self, n_rows: int) -> torch.Tensor:
        """Mean number of nonzero activations per row."""
        return (self.vals_M > 0).sum() / n_rows

    def fire_counts(self, d_sae: int) -> torch.Tensor:
        """Int [d_sae]: on how many rows each feature has a nonzero activation."""
        return torch.bincount(self.cols_M[self.vals_M != 0], minlength=d_sae)

    def fired(self, d_sae: int) -> torch.Tensor:
        """Bool [d_sae]: features with a nonzero activation somewhere in the batch."""
        fired_F = torch.zeros(d_sae, dtype=torch.bool, device=self.cols_M.device)
        return fired_F.index_fill_(0, self.cols_M[self.vals_M > 0], True)


GROUPS = 512
"""Column groups of `row_topk`'s first pass; 512 was fastest of 128-1024 at 8192 features (bench/train_step.py)."""


def row_topk(pre_NF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of every row and their columns (unsorted): torch.topk's result, found faster.

    Columns are split into GROUPS strided groups ({j, j + GROUPS, ...}). A row's k largest values lie in the k
    groups with the largest maxima (a value among the k largest is at most its group's maximum, and at most k
    groups can have a maximum that large), so one vectorised max over the row, a top-k of the GROUPS maxima and
    a top-k of those k groups' k x d_sae/GROUPS values replace a top-k over all d_sae columns (torch.topk is a
    partial sort of each whole row on a CPU: 43 against 35 ms for 4096 x 8192 in bf16, measured one after the
    other on an idle 2-core Xeon). Ties may pick other columns of equal value.

    On a CPU the same bound runs inside a C++ kernel, two passes per row (`kernels.row_topk`): 14 against 35 ms
    for 4096 x 8192 in bf16 on a 2-core AMX Xeon, 2-3x as fast up to 128 x 1M. This is the path elsewhere, and the
    reference it is tested against.
    """
    native = kernels.row_topk(pre_NF, k)
    if native is not None:
        vals_NK, idx_NK = native
        return (pre_NF.gather(1, idx_NK) if pre_NF.requires_grad else vals_NK.to(pre_NF.dtype)), idx_NK
    n, d = pre_NF.shape
    per_group = d // GROUPS
    if d % GROUPS or k >= GROUPS or k * per_group >= d // 2:
        return pre_NF.topk(k, dim=-1, sorted=False)
    groups_NK = pre_NF.view(n, per_group, GROUPS).amax(1).topk(k, dim=-1, sorted=False).indices
    steps = torch.arange(0, d, GROUPS, device=pre_NF.device)
    cols_NC = (groups_NK.unsqueeze(-1) + steps).view(n, k * per_group)
    vals_NK, picked_NK = pre_NF.gather(1, cols_NC).topk(k, dim=-1, sorted=False)
    return vals_NK, cols_NC.gather(1, picked_NK)


@torch.no_grad()
def biased_product(x_ND: torch.Tensor, b_dec_D: torch.Tensor | None, W_DF: torch.Tensor, b_F: torch.Tensor
                   ) -> torch.Tensor:
    """(x - b_dec) @ W + b without a gradient, the bias as one more input column of ones.

    `addmm` writes the bias into every row of its [N, F] output before the product adds to it: one more pass over
    the largest tensor of the step. With the bias as a row of W against a column of ones, the product writes its
    output once (on an AMX Xeon, 4096 x 576 x 8192 in bf16: 18.7 against 24.7 ms). Operands are built in the
    dtype the matmul runs in (autocast's where it is on), so nothing is cast twice.
    """
    n, d = x_ND.shape
    dtype = table_dtype(W_DF)
    x_aug = x_ND.new_empty(n, d + 1, dtype=dtype)
    if b_dec_D is None:
        x_aug[:, :d] = x_ND
    else:
        torch.sub(x_ND, b_dec_D, out=x_aug[:, :d])
    x_aug[:, d] = 1
    W_aug = W_DF.new_empty(d + 1, W_DF.shape[1], dtype=dtype)
    W_aug[:d] = W_DF
    W_aug[d] = b_F
    return torch.mm(x_aug, W_aug)


def table_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the sparse kernels read tables in: autocast's where it is on (as its matmuls would), else the weight's."""
    device = weight.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


class _SparseDecode(torch.autograd.Function):
    """sum_m vals[m] * W_dec[cols[m]] per row; both gradients without a dense [N, d_sae] matrix.

    torch's own embedding_bag backward for the weight sorts the indices and accumulates row by row (3x slower
    here than one more embedding_bag over the feature order, which the encoder's gradient reuses). Under
    autocast the tables are cast to its dtype, as a matmul's operands would be: embedding_bag reads bfloat16
    rows 2x faster than float32 ones on a CPU.

    When both gradients are wanted (training), a CPU computes them in one C++ pass over that same feature order
    (`kernels.decode_grads`): 8.0-9.6 against 19-24 ms for 4096 x 32 pairs of 576-wide bf16 rows on a Zen 4
    EPYC (the two alternating, medians of 30), accumulated and returned in float32 where PyTorch's two passes
    round both to bf16 (an error of 0.25 in a value's gradient of that test, against 2e-5).
    """

    @staticmethod
    def forward(ctx, vals_M, W_dec_FD, acts):
        ctx.acts, ctx.dtype, ctx.dtypes = acts, table_dtype(W_dec_FD), (vals_M.dtype, W_dec_FD.dtype)
        W_dec_FD = W_dec_FD.to(ctx.dtype)
        ctx.save_for_backward(vals_M, W_dec_FD)
        return F.embedding_bag(acts.cols_M, W_dec_FD, acts.offsets_N, mode="sum", per_sample_weights=vals_M.to(ctx.dtype))

    @staticmethod
    def backward(ctx, grad_ND):
        vals_M, W_dec_FD = ctx.saved_tensors
        acts: SparseActs = ctx.acts
        grad_ND = grad_ND.to(ctx.dtype).contiguous()
        if all(ctx.needs_input_grad[:2]):
            order = acts.by_feature(len(W_dec_FD))
            native = kernels.decode_grads(grad_ND, W_dec_FD, vals_M, order.order_M, order.rows_M, order.offsets_F)
            if native is not None:
                return native[0].to(ctx.dtypes[0]), native[1].to(ctx.dtypes[1]), None
        grad_vals_M = grad_W_FD = None
        if ctx.needs_input_grad[0]:
            # grad_vals[m] = grad[row m] . W_dec[col m]: embedding_bag's own kernel, the bag of each pair being its row.
            grad_vals_M = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_ND, W_dec_FD, acts.cols_M, acts.offsets_N, acts.rows_M, 0).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_W_FD = acts.by_feature(len(W_dec_FD)).weighted_rows(grad_ND, vals_M).to(ctx.dtypes[1])
        return grad_vals_M, grad_W_FD, None


def sparse_decode(acts: SparseActs, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_m vals[m] * W_dec[cols[m]] per row, [N, d]; autograd reaches vals and only the used W_dec rows."""
    return _SparseDecode.apply(acts.vals_M, W_dec_FD, acts)


class _EncoderGrad(torch.autograd.Function):
    """Identity on the selected values, whose backward is the encoder's gradient at those positions only.

    pre[n, c] = (x[n] - b_dec) . W_enc[:, c] + b_enc[c], and ReLU passes gradient where the value is positive.
    dL/dW_enc[:, c] sums gradient x input over the rows selecting c (one embedding_bag over the feature order);
    dL/db_dec is -W_enc @ dL/db_enc, since every row's input gradient sums to it (no [N, d] input gradient).
    """

    @staticmethod
    def forward(ctx, vals_M, x_ND, b_dec_D, W_enc_DF, b_enc_F, acts):
        ctx.acts, ctx.dtype = acts, table_dtype(W_enc_DF)
        ctx.save_for_backward(x_ND, b_dec_D, W_enc_DF, vals_M > 0)
        return vals_M.clone()

    @staticmethod
    def backward(ctx, grad_M):
        x_ND, b_dec_D, W_enc_DF, active_M = ctx.saved_tensors
        acts: SparseActs = ctx.acts
        grad_M = torch.where(active_M, grad_M, 0.0)
        grad_b_F = torch.zeros_like(W_enc_DF[0]).index_add_(0, acts.cols_M, grad_M)
        x_in_ND = x_ND.detach() if b_dec_D is None else x_ND.detach() - b_dec_D.detach()
        grad_W_FD = acts.by_feature(len(grad_b_F)).weighted_rows(x_in_ND.to(ctx.dtype), grad_M).to(W_enc_DF.dtype)
        grad_x_ND = grad_b_dec_D = None
        if ctx.needs_input_grad[1]:
            grad_x_ND = F.embedding_bag(acts.cols_M, W_enc_DF.detach().T.contiguous(), acts.offsets_N, mode="sum",
                                        per_sample_weights=grad_M)
        if ctx.needs_input_grad[2]:
            grad_b_dec_D = -(W_enc_DF.detach() @ grad_b_F)
        return None, grad_x_ND, grad_b_dec_D, grad_W_FD.T, grad_b_F, None


def attach_encoder_grad(acts: SparseActs, x_ND: torch.Tensor, b_dec_D: torch.Tensor | None, W_enc_DF: torch.Tensor,
                        b_enc_F: torch.Tensor) -> SparseActs:
    """Give values selected from detached pre-activations of `x_ND` (less `b_dec_D` when given) the gradient they
    would have had."""
    vals = _EncoderGrad.apply(acts.vals_M, x_ND, b_dec_D, W_enc_DF, b_enc_F, acts)
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
