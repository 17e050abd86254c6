"""A TopK SAE whose features are split over ranks, for dictionaries too large for one device.

Rank r of N holds features [r*F/N, (r+1)*F/N): those columns of W_enc and entries of b_enc, those rows of
W_dec; b_dec is replicated. Every rank sees the whole batch. A row's top-k over all F features is found
from each shard's own top-k: the global winners are among the shards' candidates, so gathering the N*k
candidates per row and taking their top k is exact (`Dist.top_mask`). Each shard decodes its winners;
the partial reconstructions are summed over ranks, so every rank holds the full reconstruction and the
same loss. AuxK's dead-feature selection is the same gather over dead candidates.

Gradients: the sum over ranks passes its output gradient unchanged to every rank's partial (each rank
backpropagates the same loss), so shard parameters get exactly their slice of the unsharded gradient.
b_dec reaches the loss through every rank's encoder and through the decoder, where each rank adds
b_dec / N; summing its gradient over ranks (a hook) gives the unsharded gradient on every rank.
Initialisation draws the full dictionary on the host once and keeps this rank's slice, so a sharded SAE
starts where the unsharded SAE of the same seed starts.
"""

from __future__ import annotations

import torch

from ..distributed import Dist
from .base import SAE, Runtime, SAEConfig, TrainOutput
from .sparse import SparseActs, row_topk, top_of_shards
from .topk import TopKSAE


class _SumOverShards(torch.autograd.Function):
    """Sum a tensor over ranks; every rank computes the same loss from the sum, so the gradient passes through."""

    @staticmethod
    def forward(ctx, partial: torch.Tensor, shards: Dist) -> torch.Tensor:
        return shards.sum(partial)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class ShardedTopKSAE(TopKSAE):
    """This rank's shard of a TopK SAE; forward and gradients equal the unsharded SAE's (tested).

    Its config is the whole SAE's (so a checkpoint records the real `d_sae`); `d_local` is this shard's width.
    """

    def __init__(self, cfg: SAEConfig, runtime: Runtime, seed: int = 0):
        if cfg.architecture != TopKSAE.architecture:
            raise ValueError(f"feature sharding supports topk SAEs, not {cfg.architecture!r}")
        shards = runtime.shards
        if cfg.d_sae % shards.world:
            raise ValueError(f"--features {cfg.d_sae} does not split evenly over {shards.world} processes")
        super().__init__(cfg, runtime)
        if self.d_local < max(self.k, cfg.n_aux):
            raise ValueError(f"each shard needs at least k={self.k} and aux_k={cfg.n_aux} features; use fewer processes")
        full = TopKSAE(cfg)
        full.initialize(torch.Generator().manual_seed(seed))  # as build_sae does, on the host
        self._load_slice(full.state_dict())
        self.b_dec.register_hook(shards.sum)

    @property
    def shards(self) -> Dist:
        """The ranks holding the other features."""
        return self.runtime.shards

    @property
    def d_local(self) -> int:
        return self.cfg.d_sae // self.runtime.shards.world

    def _load_slice(self, full: dict[str, torch.Tensor]) -> None:
        """Copy this rank's features out of an unsharded state dict."""
        part = slice(self.shards.rank * self.d_local, (self.shards.rank + 1) * self.d_local)
        with torch.no_grad():
            self.W_enc.copy_(full["W_enc"][:, part])
            self.b_enc.copy_(full["b_enc"][part])
            self.W_dec.copy_(full["W_dec"][part])
            self.b_dec.copy_(full["b_dec"])

    def select(self, pre_NF: torch.Tensor) -> SparseActs:
        """The k largest pre-activations of every row over all shards; this shard keeps its own."""
        vals_NK, idx_NK = row_topk(pre_NF, self.k)
        return top_of_shards(vals_NK, idx_NK, self.k, self.shards)

    def decode(self, f_NF: torch.Tensor) -> torch.Tensor:
        return _SumOverShards.apply(f_NF @ self.W_dec + self.b_dec / self.shards.world, self.shards)

    def decode_sparse(self, acts: SparseActs, bias: bool = True) -> torch.Tensor:
        partial = super().decode_sparse(acts, bias=False)
        return _SumOverShards.apply(partial + self.b_dec / self.shards.world if bias else partial, self.shards)

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        out = super().training_forward(x_ND, dead_F=dead_F, sparsity_scale=sparsity_scale)
        out.l0 = self.shards.sum(out.l0)  # each shard counted only its own winners
        return out

    def unsharded(self) -> SAE:
        """The whole SAE on the CPU, gathered from every shard (every rank must call this)."""
        sae = TopKSAE(self.cfg)
        full = {"W_enc": self.shards.gather_cat(self.W_enc.detach(), dim=1),
                "b_enc": self.shards.gather_cat(self.b_enc.detach()),
                "W_dec": self.shards.gather_cat(self.W_dec.detach()), "b_dec": self.b_dec.detach()}
        sae.load_state_dict({k: v.cpu() for k, v in full.items()})
        return sae
