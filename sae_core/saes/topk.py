"""TopK SAE (Gao et al., OpenAI 2024): keep the k largest pre-activations per token; AuxK revives dead features."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import SAE, Runtime, SAEConfig, TrainOutput
from .sparse import Selector, SparseActs, row_topk, top_dead


def aux_k_loss(sae: SAE, x_ND: torch.Tensor, y_ND: torch.Tensor, x_hat_ND: torch.Tensor, pre_NF: torch.Tensor,
               dead_F: torch.Tensor) -> torch.Tensor:
    """AuxK: dead features alone try to reconstruct the residual, so they get gradient and come back.

    `x_ND` is what the encoder read, `y_ND` the target (the same rows for an SAE, the MLP's output for a
    transcoder). OpenAI normalise it by the residual's variance; it is rescaled here by the target's variance so it sits
    in the units of the `mse` term, keeping their ratio (and so `aux_k_coefficient`) as published. Written
    as a mean over rows times a batch-wide ratio, so that under data parallelism (both variances over the
    whole global batch) the ranks' averaged gradients equal one process's.
    """
    shards, batch = sae.runtime.shards, sae.runtime.batch
    if not shards.any(dead_F.any()):
        return x_hat_ND.new_zeros(())
    e_ND = (y_ND - x_hat_ND).detach()
    if sae.runtime.sparse_kernels and not shards.active:
        e_hat_ND = decode_dead(sae, x_ND, dead_F)
    else:
        acts = sae.select_for_training(x_ND, pre_NF, lambda pre: top_dead(pre, dead_F, sae.cfg.n_aux, shards))
        e_hat_ND = sae.decode_sparse(acts, bias=False)
    ratio = batch.centred_ss(y_ND) / batch.centred_ss(e_ND).clamp_min(1e-12)
    return (e_hat_ND - e_ND).pow(2).sum(-1).mean() * ratio


def decode_dead(sae: SAE, x_ND: torch.Tensor, dead_F: torch.Tensor) -> torch.Tensor:
    """AuxK's reconstruction by the dead features alone, n_aux of them per row, as dense products over the dead
    columns only: a few dead columns make small matmuls, where pairs for embedding_bag would number
    rows x min(n_aux, dead) (with 164 of 8192 dead, 5x the main decode's: 150 ms of a 370 ms step, against 10 ms)."""
    dead_idx = dead_F.nonzero().squeeze(1)
    x_in_ND = x_ND - sae.b_dec if sae.cfg.apply_b_dec_to_input else x_ND
    pre_ND = torch.addmm(sae.b_enc[dead_idx], x_in_ND, sae.W_enc[:, dead_idx])
    if sae.cfg.n_aux < len(dead_idx):
        vals_NK, idx_NK = row_topk(pre_ND, sae.cfg.n_aux)
        pre_ND = torch.zeros_like(pre_ND).scatter(1, idx_NK, vals_NK)
    return pre_ND.relu() @ sae.W_dec[dead_idx]


def train_topk_family(sae: SAE, rows_ND: torch.Tensor, select: Selector, dead_F: torch.Tensor | None) -> TrainOutput:
    """The training forward shared by TopK and BatchTopK (and the TopK transcoder): MSE on the selected features plus AuxK."""
    x_ND, y_ND = sae.split_rows(rows_ND)
    pre_NF = sae.training_pre_acts(x_ND)
    acts = sae.select_for_training(x_ND, pre_NF, select)
    x_hat_ND = sae.add_skip(sae.decode_sparse(acts), x_ND)
    losses = {"mse": sae.mse(x_hat_ND, y_ND)}
    if dead_F is not None:
        losses["aux_k"] = sae.cfg.aux_k_coefficient * aux_k_loss(sae, x_ND, y_ND, x_hat_ND, pre_NF, dead_F)
    return TrainOutput(losses, acts.fired(sae.d_local), acts.l0(len(x_ND)), x_hat_ND.detach())


class TopKSAE(SAE):
    """Exactly k active features per token; no sparsity penalty to tune."""

    architecture = "topk"
    saelens_architecture = "topk"
    sparsify_activation: ClassVar[str | None] = "topk"
    takes_k = True

    def __init__(self, cfg: SAEConfig, runtime: Runtime | None = None):
        if cfg.k is None:
            raise ValueError("a topk SAE needs k (active features per token)")
        super().__init__(cfg, runtime)
        self.k: int = cfg.k

    def select(self, pre_NF: torch.Tensor) -> SparseActs:
        """The k largest pre-activations of every row, rectified."""
        vals_NK, idx_NK = row_topk(pre_NF, self.k)
        return SparseActs.from_rows(vals_NK.relu(), idx_NK)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.select(self.pre_acts(x_ND)).dense(self.d_local)

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        return train_topk_family(self, x_ND, self.select, dead_F)

    def saelens_activation(self) -> dict[str, Any]:
        return {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": self.k}, "k": self.k}

    def row_topk_selection(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, SparseActs]:
        pre_NF = self.pre_acts(x_ND)
        return pre_NF, self.select(pre_NF)
