"""Transcoders (Dunefsky et al. 2024; Ameisen et al. 2025): sparse features that read an MLP's input and predict
its output, so that with one per layer the MLPs can be replaced by features (circuit-tracer's per-layer set).

A transcoder is an SAE whose encoder reads one activation and whose decoder writes another of the same width:
f = act(x @ W_enc + b_enc) on the MLP's input x, y_hat = f @ W_dec + b_dec for the MLP's output y. b_dec is the
output's bias, so none is subtracted from the input (`apply_b_dec_to_input` is false). A skip transcoder (Paulo
et al. 2025, arXiv 2501.18823) adds a linear term x @ W_skip.T, W_skip [d_out, d_in], starting at zero, as
circuit-tracer, sparsify and SAELens store it.

Training rows hold x and y side by side ([N, 2 * d_in]: the harvest's `mlp_in` and `mlp_out` rows, see
`activations.paired`), so one shuffle keeps every pair together and the trainer needs no second stream. The
activation (TopK, JumpReLU, ReLU) and its loss are the SAE's of the same name: a transcoder class is that SAE
with this class in front of it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..sites import Site
from .base import SAE, Runtime, SAEConfig
from .jumprelu import JumpReLUSAE
from .relu import ReLUSAE
from .topk import TopKSAE


class Transcoder(SAE):
    """What every transcoder shares, whatever its activation: paired rows, no input bias, the optional skip term."""

    transcodes = True
    sparsify_activation: ClassVar[str | None] = None  # `convert` writes no sparsify transcoders (docs/formats.md)
    config_defaults: ClassVar[dict[str, Any]] = {"apply_b_dec_to_input": False}

    def __init__(self, cfg: SAEConfig, runtime: Runtime | None = None):
        if cfg.apply_b_dec_to_input:
            raise ValueError("a transcoder's b_dec is the bias of its output, not of its input: "
                             "apply_b_dec_to_input must be false")
        super().__init__(cfg, runtime)
        self.W_skip: nn.Parameter | None = (nn.Parameter(torch.zeros(cfg.d_in, cfg.d_in)) if cfg.skip_connection
                                            else None)

    @classmethod
    def d_in_of_rows(cls, row_width: int) -> int:
        if row_width % 2:
            raise ValueError(f"a transcoder trains on (input, output) rows side by side; {row_width}-wide rows are not")
        return row_width // 2

    @property
    def row_width(self) -> int:
        return 2 * self.cfg.d_in

    def split_rows(self, rows_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLP input, MLP output) of rows that hold the two side by side."""
        if rows_ND.shape[-1] != self.row_width:
            raise ValueError(f"a transcoder of width {self.cfg.d_in} trains on (input, output) rows "
                             f"{self.row_width} wide, got {rows_ND.shape[-1]}")
        return rows_ND[:, : self.cfg.d_in], rows_ND[:, self.cfg.d_in :]

    def add_skip(self, y_hat_ND: torch.Tensor, x_ND: torch.Tensor) -> torch.Tensor:
        if self.W_skip is None:
            return y_hat_ND
        return y_hat_ND + x_ND.to(self.W_skip.dtype) @ self.W_skip.T

    def scale_rows(self, rows_ND: torch.Tensor, input_scale: float, output_scale: float) -> torch.Tensor:
        x_ND, y_ND = self.split_rows(rows_ND)
        return torch.cat([x_ND * input_scale, y_ND * output_scale], dim=1)

    @torch.no_grad()
    def fold_scales_(self, input_scale: float, output_scale: float) -> None:
        super().fold_scales_(input_scale, output_scale)
        if self.W_skip is not None:
            self.W_skip.mul_(input_scale / output_scale)

    def output_site(self, site: Site) -> Site:
        """The MLP output of the layer whose input the encoder reads."""
        return Site(site.layer, "mlp_out")

    # --- saving: W_skip beside the per-feature tensors ------------------------------------------

    def saved_shapes(self) -> dict[str, tuple[int, ...]]:
        skip = {"W_skip": (self.cfg.d_in, self.cfg.d_in)} if self.cfg.skip_connection else {}
        return {**super().saved_shapes(), **skip}

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().saved_tensors()
        if self.W_skip is not None:
            tensors["W_skip"] = self.W_skip.detach().to(getattr(torch, self.cfg.dtype)).contiguous()
        return tensors

    @torch.no_grad()
    def load_tensors_(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors_(tensors)
        if self.W_skip is not None:
            self.W_skip.copy_(tensors["W_skip"].float())

    def saelens_cfg(self) -> dict[str, Any]:
        """SAELens's transcoder fields (its TranscoderConfig) beside the SAE's: the output's width and hook."""
        site = self.cfg.provenance.site
        output = self.output_site(site) if site is not None else None
        return {**super().saelens_cfg(), "d_out": self.cfg.d_in,
                "hook_name_out": output.hook_name if output else None,
                "hook_layer_out": output.layer if output else None}


class TopKTranscoder(Transcoder, TopKSAE):
    """TopK activation: exactly k features per token, AuxK for dead ones (sparsify's transcoders)."""

    architecture = "transcoder"
    saelens_architecture = "topk_transcoder"


class JumpReLUTranscoder(Transcoder, JumpReLUSAE):
    """JumpReLU activation with an L0 penalty (Gemma Scope's transcoders); circuit-tracer reads its threshold."""

    architecture = "jumprelu_transcoder"
    saelens_architecture = "jumprelu_transcoder"
    circuit_tracer_activation = "jump_relu"


class ReLUTranscoder(Transcoder, ReLUSAE):
    """ReLU activation with the decoder-norm-weighted L1 penalty; the activation circuit-tracer's own loader assumes."""

    architecture = "relu_transcoder"
    saelens_architecture = "transcoder"
    circuit_tracer_activation = "relu"
