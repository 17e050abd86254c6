"""The non-zero feature activations of one batch, in the form the recording pass folds in.

A recorder needs the firing (token, feature, value) triples in token order, and, for the few windows it
keeps, a feature's activation on arbitrary tokens. A dense encoder provides both from its [N, d_sae]
matrix. A TopK encoder already holds the triples: building the dense matrix from them (zeroing and
scattering N x d_sae floats) and scanning it again for non-zeros cost about as much as the encoder's
matmul, so its triples are used directly, and window lookups read its pre-activations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..saes.sparse import SparseActs


@dataclass(frozen=True)
class Firing:
    """The firing entries of an [N, F] activation matrix sorted by (row, feature), and a lookup into it.

    The lookup sees the whole matrix even after `take` narrows the entries. A dense encoder's matrix is
    indexed directly. A TopK encoder's activation of (row, feature) is the pre-activation when that is
    above the row's smallest selected value, zero when below; only exact ties with that value (which
    topk may have broken either way) are looked up in the sorted keys row * F + feature of the selected.
    """

    row_C: torch.Tensor
    feat_C: torch.Tensor
    value_C: torch.Tensor
    """float32, > 0."""
    n_features: int
    dense_NF: torch.Tensor
    """The dense activations, or for TopK the pre-activations."""
    floor_N: torch.Tensor | None = None
    """TopK: each row's smallest selected (rectified) value, +inf for a row with none."""
    keys_K: torch.Tensor | None = None
    """TopK: the sorted keys row * F + feature of every selected positive value (all rows, untouched by `take`)."""

    @classmethod
    def from_dense(cls, f_NF: torch.Tensor) -> Firing:
        f_NF = f_NF.float()
        row_C, feat_C = (f_NF > 0).nonzero(as_tuple=True)
        return cls(row_C, feat_C, f_NF[row_C, feat_C], f_NF.shape[1], f_NF)

    @classmethod
    def from_topk(cls, pre_NF: torch.Tensor, acts: SparseActs) -> Firing:
        """`acts` selected from `pre_NF` as each row's largest values (TopK, or a shard's share of them)."""
        n, n_features = pre_NF.shape
        floor_N = torch.full((n,), torch.inf, device=pre_NF.device).scatter_reduce(0, acts.rows_M, acts.vals_M, "amin")
        positive = acts.vals_M > 0
        keys_K, order = (acts.rows_M[positive] * n_features + acts.cols_M[positive]).sort()
        value_C = acts.vals_M[positive][order].float()
        return cls(keys_K // n_features, keys_K % n_features, value_C, n_features, pre_NF, floor_N, keys_K)

    def take(self, mask: torch.Tensor) -> Firing:
        """The entries where `mask` holds; lookups still see the whole matrix."""
        return replace(self, row_C=self.row_C[mask], feat_C=self.feat_C[mask], value_C=self.value_C[mask])

    def at(self, row_X: torch.Tensor, feat_X: torch.Tensor) -> torch.Tensor:
        """Activation of feature `feat_X` on row `row_X`, elementwise (zero where it does not fire)."""
        value_X = self.dense_NF[row_X, feat_X].float()
        if self.floor_N is None:
            return value_X
        floor_X = self.floor_N[row_X]
        selected_X = value_X > floor_X
        tie = (value_X == floor_X).nonzero(as_tuple=True)
        if tie[0].numel():
            selected_X[tie] = self._is_selected(row_X[tie], feat_X[tie])
        return torch.where(selected_X, value_X.clamp_min(0), 0.0)

    def _is_selected(self, row_X: torch.Tensor, feat_X: torch.Tensor) -> torch.Tensor:
        keys_K = self.keys_K
        if keys_K is None or keys_K.numel() == 0:
            return torch.zeros(row_X.shape, dtype=torch.bool, device=row_X.device)
        query_X = row_X * self.n_features + feat_X
        return keys_K[torch.searchsorted(keys_K, query_X).clamp_max(keys_K.numel() - 1)] == query_X
