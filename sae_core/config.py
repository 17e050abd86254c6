"""The harvest and training stages' frozen configs; each field says what it controls.

The other stages keep theirs beside their code: SAEConfig (what an SAE is) in saes/base.py,
RecordConfig with the recording pass, DemoConfig in app/demo.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .data import DEFAULT_CONTEXT
from .lm import DEFAULT_MODEL


@dataclass(frozen=True)
class HarvestConfig:
    """What to run and where to read it when harvesting activations."""

    model: str = DEFAULT_MODEL
    """Model name, local directory, .gguf file or hub id."""
    site: str = "layers.6.resid_post"
    """Hook site, `layers.N.{resid_pre,resid_post,mlp_out,attn_out}` or a SAELens alias; or several, comma-separated,
    harvested from one forward pass into a directory each (harvest.py's layout)."""
    dataset: str = "demo"
    """Corpus: `demo`, a .txt/.jsonl/.parquet file or folder, or a hub dataset name."""
    text_field: str = "text"
    """Field (jsonl) or column (parquet, hub) that holds the text."""
    tokens: int = 200_000
    """How many activation rows (non-special tokens) to write."""
    context_len: int = DEFAULT_CONTEXT
    """Tokens per context, BOS included."""
    batch_size: int = 32
    """Contexts per forward pass."""
    dtype: str = "bfloat16"
    """Storage dtype of the activations."""
    model_dtype: str = "float32"
    """Compute dtype of the model's forward."""
    shard_tokens: int = 1 << 16
    """Rows per shard file; a shard is the unit of atomic writes and of resume."""
    skip_nonfinite: bool = False
    """Leave out (and count in the manifest) rows holding NaN or infinities instead of stopping at the first."""

    def to_dict(self) -> dict:
        """Plain dict for manifests and cache keys."""
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: budget, batch, optimiser schedule, numerics and bookkeeping."""

    tokens: int
    """Training budget in activation rows; the data are cycled when fewer."""
    batch_size: int = 4096
    """Rows per optimiser step."""
    lr: float | None = None
    """Adam learning rate; None scales with the dictionary: 2e-3 / sqrt(d_sae / 8192) (see train.default_lr)."""
    warmup_fraction: float = 0.01
    """Fraction of steps over which the learning rate rises linearly from zero."""
    decay_fraction: float = 0.2
    """Final fraction of steps over which it falls linearly to zero (Anthropic, April 2024)."""
    sparsity_warmup_fraction: float = 0.05
    """relu/jumprelu: fraction of steps over which the sparsity penalty rises from zero."""
    dead_after_tokens: int | None = None
    """A feature is dead after this many rows without firing; None means min(10M, tokens / 10)."""
    seed: int = 0
    """Seeds initialisation and data order."""
    dtype: str = "auto"
    """Compute dtype of the matmuls: bfloat16 (autocast; weights and Adam stay float32), float32 for exactness, or
    auto: bfloat16 where the device has fast bf16 matmuls, else float32 (`devices.fast_bf16`)."""
    sparse_kernels: bool = True
    """topk/batchtopk: decode with embedding_bag and take sparse encoder gradients (tested equal to dense)."""
    normalize: bool = True
    """Scale inputs to mean norm sqrt(d_in) while training, folded back into the saved weights."""
    shuffle_rows: int = 1 << 17
    """Rows held in the shuffle buffer; bounds the data's memory to shuffle_rows x width x bytes per value
    (151 MB at width 576 in bf16) whatever the harvest's size. Batches mix pieces from all over the data."""
    checkpoint_every_s: float = 60.0
    """Wall-clock seconds between checkpoints, stretched to 20x the last save's time (saving costs <= 5%)."""
    checkpoint_every_tokens: int | None = None
    """Also checkpoint every this many rows (rounded to whole steps); None: every tenth of the budget once 20 saves'
    time has passed since the last, 0: by time only.

    A kill therefore loses at most min(a minute, a tenth of the run, 20 saves' time); see
    train.Trainer.checkpoint_steps.
    """
    keep_checkpoint: bool = False
    """Checkpoint the last step too and keep the checkpoint once the SAE is saved (Adam's state makes it ~3x the
    SAE: 113 MB at 576 x 8192). Off, the finished run writes no checkpoint at its end and deletes the last one;
    a killed run resumes from its latest checkpoint either way."""
    log_every: int = 50
    """Steps between lines of the training log."""
    progress: bool = True
    """Show a tqdm progress bar."""

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.batch_size))
