"""The shared SAE: parameters, initialisation, decoding, decoder-norm handling and saving in SAELens layout."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..distributed import Dist
from ..provenance import Provenance
from ..sites import Site, SiteError, hidden_size, num_layers, parse_site
from .artifact import write_sae
from .sparse import Selector, SparseActs, attach_encoder_grad, biased_product, sparse_decode


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: its architecture, sizes, where it reads activations and its loss coefficients."""

    architecture: str
    """Registry name: relu, topk, batchtopk, jumprelu, or a transcoder (transcoder, jumprelu_transcoder, relu_transcoder)."""
    d_in: int
    """Width of the activations the SAE reads (the model's d_model at the site; a transcoder's output is as wide)."""
    d_sae: int
    """Number of dictionary features."""
    k: int | None = None
    """Active features per token for topk, mean active features per token for batchtopk."""
    provenance: Provenance = Provenance()
    """Model, site, corpus and context length of the activations the SAE was trained on."""
    dtype: str = "float32"
    """Dtype of the stored weights."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding (false for Gemma Scope SAEs)."""
    l1_coefficient: float = 5.0
    """relu: weight of the decoder-norm-weighted L1 penalty (Anthropic, April 2024, with E|x| = sqrt(d))."""
    l0_coefficient: float = 0.002
    """jumprelu: weight of the L0 penalty per token (Gemma Scope; on activations scaled to norm sqrt(d))."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: width of the rectangle kernel in the straight-through threshold gradient."""
    jumprelu_init_threshold: float = 0.1
    """jumprelu: initial threshold of every feature."""
    aux_k: int | None = None
    """topk/batchtopk: dead features used by the AuxK loss; None means d_in // 2 (sparsify's default)."""
    aux_k_coefficient: float = 1 / 32
    """topk/batchtopk: weight of the AuxK loss (OpenAI 2024)."""
    skip_connection: bool = False
    """Transcoders: add a linear skip term x @ W_skip.T to the output (skip transcoders, Paulo et al. 2025)."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in} and {self.d_sae}")
        if self.k is not None and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae}, got {self.k}")

    @property
    def n_aux(self) -> int:
        """How many dead features the AuxK loss may use."""
        return min(self.aux_k or self.d_in // 2, self.d_sae)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form of cfg.json's `saescope` entry, checkpoints and the store's config column."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out.update(value.to_cfg() if isinstance(value, Provenance) else {f.name: value})
        return out


@dataclass(frozen=True)
class Runtime:
    """How an SAE computes while it trains: chosen by the trainer at construction, never saved with the SAE."""

    sparse_kernels: bool = False
    """Train TopK-style SAEs with the sparse kernels of `sparse.py` (tested equal to the dense path)."""
    batch: Dist = field(default_factory=Dist)
    """The ranks sharing each training batch: batch-wide statistics and selections are taken over all of them."""
    shards: Dist = field(default_factory=Dist)
    """The ranks the features are split over (one: this SAE holds them all; see `sharded.py`)."""


@dataclass
class TrainOutput:
    """One training forward: named loss terms (summed for the gradient) and the statistics the trainer logs."""

    losses: dict[str, torch.Tensor]
    """Weighted loss terms; their sum is the training loss."""
    fired_F: torch.Tensor
    """Bool [d_sae]: features that fired on at least one row of the batch."""
    l0: torch.Tensor
    """Mean number of active features per row."""
    x_hat_ND: torch.Tensor = field(repr=False)
    """The reconstruction, for FVU in the training log."""

    @property
    def loss(self) -> torch.Tensor:
        """The sum of all terms, the quantity the optimiser descends."""
        return sum(self.losses.values())  # type: ignore[return-value]


UNKNOWN_HOOK = "unknown"
"""The hook name cfg.json gives SAELens for activations that name no site (`saescope train --site` names one)."""


class SAE(nn.Module):
    """A sparse autoencoder on [N, d_in] activations; subclasses choose the nonlinearity and the loss."""

    architecture: ClassVar[str]
    saelens_architecture: ClassVar[str]
    """The `architecture` SAELens reads for this SAE's saved form."""
    unit_norm_decoder: ClassVar[bool] = True
    """Whether training keeps decoder rows at unit norm (false where the loss uses the norms instead)."""
    init_decoder_norm: ClassVar[float] = 1.0
    """Row norm of the initial decoder."""
    takes_k: ClassVar[bool] = False
    """Whether the config's k (active features per token) means anything to this architecture."""
    extra_tensors: ClassVar[tuple[str, ...]] = ()
    """Per-feature [d_sae] tensors saved and loaded beside W_enc, b_enc, W_dec and b_dec."""
    sparsify_activation: ClassVar[str | None] = None
    """The `activation` of EleutherAI sparsify that computes this SAE's features; None where none does."""
    transcodes: ClassVar[bool] = False
    """Whether it reads one activation and predicts another (a transcoder: an MLP's input -> its output),
    training on rows that hold the two side by side (`split_rows`)."""
    circuit_tracer_activation: ClassVar[str | None] = None
    """A transcoder's activation as circuit-tracer's per-layer layout computes it (`circuit_tracer.py`); None: it cannot."""
    config_defaults: ClassVar[dict[str, Any]] = {}
    """SAEConfig fields whose default differs for this architecture (a transcoder applies no b_dec to its input)."""

    def __init__(self, cfg: SAEConfig, runtime: Runtime | None = None):
        super().__init__()
        if cfg.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} needs architecture {self.architecture!r}, got {cfg.architecture!r}")
        if cfg.skip_connection and not self.transcodes:
            raise ValueError(f"only a transcoder takes a skip connection; a {cfg.architecture} SAE reconstructs its input")
        self.cfg = cfg
        self.runtime = runtime or Runtime()
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, self.d_local))
        self.b_enc = nn.Parameter(torch.zeros(self.d_local))
        self.W_dec = nn.Parameter(torch.zeros(self.d_local, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    @property
    def d_local(self) -> int:
        """Features this module holds: all `cfg.d_sae` of them, unless they are split over ranks."""
        return self.cfg.d_sae

    # --- initialisation -------------------------------------------------------------------------

    @torch.no_grad()
    def initialize(self, generator: torch.Generator | None = None) -> None:
        """Random decoder directions at a fixed norm, encoder as its transpose, zero biases (OpenAI; Anthropic)."""
        W_dec_FD = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator)
        W_dec_FD *= self.init_decoder_norm / W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec.copy_(W_dec_FD)
        self.W_enc.copy_(W_dec_FD.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    # --- forward --------------------------------------------------------------------------------

    def pre_acts(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [N, d_sae]."""
        if self.cfg.apply_b_dec_to_input:
            x_ND = x_ND - self.b_dec
        return torch.addmm(self.b_enc, x_ND, self.W_enc)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Dense, non-negative feature activations [N, d_sae]."""
        raise NotImplementedError

    def decode(self, f_NF: torch.Tensor) -> torch.Tensor:
        """Reconstruction [N, d_in] from feature activations."""
        return f_NF @ self.W_dec + self.b_dec

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.add_skip(self.decode(self.encode(x_ND)), x_ND)

    @classmethod
    def d_in_of_rows(cls, row_width: int) -> int:
        """The d_in of this architecture trained on rows `row_width` wide (see `row_width`)."""
        return row_width

    @property
    def row_width(self) -> int:
        """Width of a training or evaluation row: d_in, or a transcoder's input and target side by side."""
        return self.cfg.d_in

    def split_rows(self, rows_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the encoder reads, what the output should equal) of a batch of rows: an SAE's are the same."""
        return rows_ND, rows_ND

    def output_site(self, site: Site) -> Site:
        """The site the decoder writes when the encoder reads `site`: that site, or a transcoder's MLP output."""
        return site

    def add_skip(self, y_hat_ND: torch.Tensor, x_ND: torch.Tensor) -> torch.Tensor:
        """The output given the decoding `y_hat_ND` of input `x_ND`: the decoding, plus a skip transcoder's x @ W_skip.T."""
        return y_hat_ND

    def training_pre_acts(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Pre-activations for a training step; detached when the sparse kernels will supply the gradient."""
        if not self.runtime.sparse_kernels:
            return self.pre_acts(x_ND)
        with torch.no_grad():
            b_dec_D = self.b_dec if self.cfg.apply_b_dec_to_input else None
            return biased_product(x_ND, b_dec_D, self.W_enc, self.b_enc)

    def select_for_training(self, x_ND: torch.Tensor, pre_NF: torch.Tensor, select: Selector) -> SparseActs:
        """Pick active (row, feature) pairs; with sparse kernels, reattach the encoder's gradient to them."""
        acts = select(pre_NF)
        if not self.runtime.sparse_kernels:
            return acts
        b_dec_D = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return attach_encoder_grad(acts, x_ND, b_dec_D, self.W_enc, self.b_enc)

    def decode_sparse(self, acts: SparseActs, bias: bool = True) -> torch.Tensor:
        """Reconstruction from sparse activations: embedding_bag with sparse kernels, a dense matmul without."""
        if self.runtime.sparse_kernels:
            x_hat_ND = sparse_decode(acts, self.W_dec)
        else:
            x_hat_ND = acts.dense(self.d_local).to(self.W_dec.dtype) @ self.W_dec
        return x_hat_ND + self.b_dec if bias else x_hat_ND

    def training_forward(
        self, x_ND: torch.Tensor, *, dead_F: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainOutput:
        """Loss terms and statistics for one batch; `dead_F` feeds AuxK, `sparsity_scale` warms penalties up."""
        raise NotImplementedError

    def loss(self, x_ND: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Named loss terms for a batch (see `training_forward`)."""
        return self.training_forward(x_ND, **kwargs).losses

    @staticmethod
    def mse(x_hat_ND: torch.Tensor, x_ND: torch.Tensor) -> torch.Tensor:
        """Squared error summed over the feature dimension, averaged over rows."""
        return (x_hat_ND - x_ND).pow(2).sum(dim=-1).mean()

    def unsharded(self) -> SAE:
        """A CPU copy of the SAE holding every feature (collective for a feature-sharded SAE)."""
        sae = type(self)(self.cfg)
        sae.load_state_dict(self.state_dict())
        return sae

    def saved_shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensors the saved SAE holds, with their shapes (what a loader must find)."""
        cfg = self.cfg
        shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
        return {**shapes, **dict.fromkeys(self.extra_tensors, (cfg.d_sae,))}

    @torch.no_grad()
    def load_tensors_(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy in saved tensors (SAELens names and shapes, checked by the caller)."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(self, name).copy_(tensors[name])  # copy_ converts: no float32 copy of a bf16 file's tensor first

    # --- decoder norms and rescaling -----------------------------------------------------------

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Put every decoder row back at unit norm (after an optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the part of W_dec's gradient that would only change row norms (OpenAI 2024).

        grad -= (grad . w) w / |w|^2 per row, as a row-wise dot, a row norm and one fused multiply-subtract: no
        unit-row or product matrices of W_dec's size (half the time of building them, measured on 8192 x 576). The
        dot is a `vecdot`: einsum lowers it to a batched matmul of 8192 1 x 576 products, 3.5x slower on an AMX
        Xeon. |w|^2 as a norm reads W_dec once without writing a product (a second vecdot did): 4.7 against 5.4 ms
        inside a bf16 step on a Zen 4 EPYC, timed step by step in turn."""
        if self.W_dec.grad is None:
            return
        W_FD, grad_FD = self.W_dec, self.W_dec.grad
        dots_F = torch.linalg.vecdot(grad_FD, W_FD) / torch.linalg.vector_norm(W_FD, dim=1).square().clamp_min(1e-16)
        grad_FD.addcmul_(W_FD, dots_F[:, None], value=-1)

    @torch.no_grad()
    def fold_decoder_norm_(self) -> None:
        """Rescale so decoder rows have unit norm, moving the norms into the features; same reconstructions."""
        norm_F = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec.div_(norm_F[:, None])
        self.W_enc.mul_(norm_F)
        self.b_enc.mul_(norm_F)
        self._scale_thresholds_(norm_F)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        """Turn an SAE trained on `scale * x` into one that reads and writes raw x.

        Features come out divided by `scale` (in raw activation units) and decoder rows keep their norm;
        the choice of active features, and so every reconstruction, is unchanged.
        """
        self.b_dec.div_(scale)
        self.b_enc.div_(scale)
        self._scale_thresholds_(torch.full((self.d_local,), 1 / scale))

    @torch.no_grad()
    def fold_scales_(self, input_scale: float, output_scale: float) -> None:
        """Turn an SAE trained to map `input_scale * x` to `output_scale * y` into one on raw x and y.

        An SAE's two scales are one (x is y); a transcoder's input and output are normalised apart, since an
        MLP's output can be orders of magnitude smaller than its input. The encoder takes their ratio.
        """
        if input_scale != output_scale:
            self.W_enc.mul_(input_scale / output_scale)
        self.fold_input_scale_(output_scale)

    def scale_rows(self, rows_ND: torch.Tensor, input_scale: float, output_scale: float) -> torch.Tensor:
        """Training rows with the input scaled by `input_scale` and the target by `output_scale` (one for an SAE)."""
        return rows_ND * input_scale

    def _scale_thresholds_(self, factor_F: torch.Tensor) -> None:
        """Multiply any activation thresholds by a per-feature factor (architectures with thresholds)."""

    # --- saving ---------------------------------------------------------------------------------

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors written to sae_weights.safetensors, in SAELens names and shapes."""
        dtype = getattr(torch, self.cfg.dtype)
        names = ("W_enc", "b_enc", "W_dec", "b_dec", *self.extra_tensors)
        return {name: getattr(self, name).detach().to(dtype).contiguous() for name in names}

    def saelens_activation(self) -> dict[str, Any]:
        """cfg.json fields by which SAELens tells this architecture's activation from the ReLU default."""
        return {}

    def saelens_cfg(self) -> dict[str, Any]:
        """cfg.json as SAELens reads it, with saescope's own config under `saescope` for a lossless reload.

        SAELens needs a hook name string (its loader tests `"hook_z" in hook_name`, a TypeError on null), so an
        SAE whose activations name no site (a bare array) records UNKNOWN_HOOK there; `saescope` keeps null.
        """
        cfg, provenance = self.cfg, self.cfg.provenance
        hook_layer = provenance.site.layer if provenance.site else None
        hook_name = provenance.hook_name or UNKNOWN_HOOK
        saved = {
            "architecture": self.saelens_architecture,
            "d_in": cfg.d_in,
            "d_sae": cfg.d_sae,
            "dtype": cfg.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {
                "model_name": provenance.model,
                "hook_name": hook_name,
                "hook_layer": hook_layer,
                "hook_head_index": None,
                "prepend_bos": True,
                "context_size": provenance.context_len,
                "dataset_path": provenance.dataset,
            },
            # Flat copies for SAELens < 6, which read these at the top level.
            "model_name": provenance.model,
            "hook_name": hook_name,
            "hook_layer": hook_layer,
            "hook_head_index": None,
            "context_size": provenance.context_len,
            "dataset_path": provenance.dataset,
            "prepend_bos": True,
            "finetuning_scaling_factor": False,
            "activation_fn_str": "relu",
            "activation_fn_kwargs": {},
            "saescope": cfg.to_dict(),
        }
        return saved | self.saelens_activation()

    def save(self, directory: str | Path) -> Path:
        """Write cfg.json and sae_weights.safetensors atomically into `directory`."""
        return write_sae(directory, self.saelens_cfg(), self.saved_tensors())

    def site_in(self, model: nn.Module) -> Site:
        """The model site this SAE reads, from its provenance, checked against the model's depth and width."""
        provenance = self.cfg.provenance
        site = (provenance.site or parse_site(provenance.hook_name or "")).within(num_layers(model))
        if self.cfg.d_in != hidden_size(model):
            raise SiteError(f"the SAE reads {self.cfg.d_in}-wide activations but the model's are {hidden_size(model)} wide")
        return site

    def row_topk_selection(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, SparseActs] | None:
        """Pre-activations and the active features, where those are each row's largest pre-activations; else None.

        Recording reads the firing entries of such a selection directly instead of scanning the dense
        `encode` (see `records.firing`). The default is None: the dense activations alone say which fire.
        """
        return None

