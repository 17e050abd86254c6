"""Train an SAE on a stream of activation batches, with exact checkpoint/resume.

The run is a pure function of (SAE config, train config, data): initialisation and data order come from
the seed, nothing reads the global RNG, and the data stream is addressed by row position. A checkpoint
holds the step, the weights, Adam's state, the dead-feature counters and the input scale, so a run
killed at any moment and resumed ends bit-for-bit where an uninterrupted run ends.

Checkpoints come every minute of wall time and every tenth of the budget, whichever is first (see
`Trainer.checkpoint_steps`), each announced by a line of the training log; a run killed before its first
resumes as a fresh start, which the determinism makes the same run. A finished run needs no checkpoint (its
SAE is on disk): none is written at the last step and the last one is deleted, unless `keep_checkpoint`.
A loss or weights that turn NaN or infinite stop the run before anything is written, so the last
checkpoint on disk is always a good one.

Data parallelism (torchrun): every rank walks the same seeded stream of global batches and computes on
its contiguous share of each; gradients are averaged over ranks, and the fired masks OR-ed, so weights,
Adam state, decoder norms and dead-feature counters stay identical on every rank and the run matches one
process's within float tolerance. Rank 0 writes the checkpoint, log and SAE.

Feature sharding (`shard_features`, TopK only): every rank sees the whole batch and holds a slice of the
features (`saes/sharded.py`); each rank checkpoints its own shard and rank 0 writes the gathered SAE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from .config import TrainConfig
from .devices import autocast, compute_dtype, prefetch_to
from .distributed import Dist
from .fileio import atomic_write
from .finite import NonFiniteError, all_finite
from .provenance import Provenance
from .saes import SAE, Runtime, SAEConfig, TrainOutput, artifact, build_sae, sae_class
from .saes.artifact import TrainingLog
from .saes.sharded import ShardedTopKSAE

INIT_SAMPLE_ROWS = 16384
"""Rows used to initialise b_dec and the input scale."""

CHECKPOINTS_PER_RUN = 10
"""With TrainConfig.checkpoint_every_tokens None, a checkpoint every tenth of the run: a kill loses at most 10%."""

SAVE_COST_RATIO = 20
"""The time between checkpoints is at least this many times the last save's, so saving costs at most ~5%."""

NO_STEP = 2**62
"""`Trainer.first_nonfinite` while every loss has been finite."""

BOOKKEEPING = ("progress", "checkpoint_every_s", "checkpoint_every_tokens", "checkpoint_every_steps", "keep_checkpoint")
"""TrainConfig fields (and one former field) a resumed run may change: they decide no weight."""


def run_identity(train_cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint and the run resuming it must share: all but display and checkpoint cadence."""
    return {k: v for k, v in train_cfg.items() if k not in BOOKKEEPING}


def default_lr(d_sae: int) -> float:
    """Adam's learning rate: 2e-3 at 8192 features, scaled by 1/sqrt(d_sae) as OpenAI (2024) scale theirs.

    OpenAI's constant (2e-4 at 16384) suits runs of billions of tokens. Measured here on SmolLM2 layer-6
    residuals (TopK, 8192 features, k=32, batch 4096, 262k tokens; held-out FVU / dead fraction):
    2.8e-4 gives 0.287 / 0.000, 1e-3 0.155 / 0.001, 2e-3 0.125 / 0.005, 4e-3 0.107 / 0.116 (too many dead).
    """
    return 2e-3 / math.sqrt(d_sae / 8192)


def lr_factor(step: int, total: int, warmup_fraction: float, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to zero."""
    warmup = max(1, round(total * warmup_fraction))
    decay_start = total - round(total * decay_fraction)
    if step < warmup:
        return (step + 1) / warmup
    if step >= decay_start:
        return max(0.0, (total - step) / max(1, total - decay_start))
    return 1.0


def geometric_median(x_ND: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """Weiszfeld's iteration; a robust centre for b_dec (OpenAI 2024 initialise it so)."""
    median_D = x_ND.mean(0)
    for _ in range(iterations):
        weights_N = 1 / (x_ND - median_D).norm(dim=1).clamp_min(1e-6)
        median_D = (weights_N[:, None] * x_ND).sum(0) / weights_N.sum()
    return median_D


class TrainingData(Protocol):
    """What the trainer reads: activation files (`ActivationSource`) or a model streamed live (`ModelStream`)."""

    @property
    def d_in(self) -> int: ...

    @property
    def provenance(self) -> Provenance: ...

    def head(self, n_rows: int) -> torch.Tensor: ...

    def rank_batches(self, batch_size: int, seed: int, start_row: int, buffer_rows: int,
                     dist: Dist) -> Iterator[torch.Tensor]:
        """This rank's rows of the global batches from global row `start_row` of the seeded stream,
        shuffled through a buffer of `buffer_rows` rows."""
        ...


@dataclass
class TrainState:
    """Everything besides the weights that a resumed run needs to continue identically."""

    step: int
    input_scale: float
    since_fired_F: torch.Tensor
    """Rows since each feature last fired."""
    output_scale: float
    """The target's scale: the input's for an SAE, the MLP output's own for a transcoder."""


class Trainer:
    """Owns one SAE, its optimiser and its counters; `run` trains to the budget, checkpointing on the way."""

    def __init__(self, sae_cfg: SAEConfig, cfg: TrainConfig, data: TrainingData, out: Path,
                 dist: Dist | None = None, shard_features: bool = False):
        self.dist = dist or Dist()
        self.device = self.dist.device
        # The ranks that split each batch: all of them (data parallel), or none when the features are split.
        self.batch_dist = Dist(device=self.device) if shard_features else self.dist
        self.batch_dist.share(cfg.batch_size)  # refuse a batch that does not split evenly before any work
        # `auto` is saved as what it meant here, so a resume elsewhere that would compute differently is refused;
        # rank 0's meaning is every rank's, since on some CPUs it rests on a timed matmul (`devices.fast_bf16`).
        cfg = replace(cfg, dtype=self.dist.broadcast_object(compute_dtype(cfg.dtype, self.device)))
        self.cfg, self.data, self.out = cfg, data, Path(out)
        sae: SAE
        if shard_features:
            sae = ShardedTopKSAE(sae_cfg, Runtime(cfg.sparse_kernels, self.batch_dist, shards=self.dist), cfg.seed)
        else:
            sae = build_sae(sae_cfg, seed=cfg.seed, runtime=Runtime(cfg.sparse_kernels, self.batch_dist))
        if data.d_in != sae.row_width:
            raise ValueError(f"the activations have width {data.d_in}, the {sae_cfg.architecture} expects rows "
                             f"{sae.row_width} wide (d_in={sae_cfg.d_in})")
        self.sae = sae.to(self.device)
        self.lr = cfg.lr or default_lr(sae_cfg.d_sae)
        # fused: one kernel for the whole update, measured 5x faster than the default loop on this CPU.
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.lr, betas=(0.9, 0.999), fused=True)
        self.dead_after = cfg.dead_after_tokens or min(10_000_000, max(cfg.tokens // 10, cfg.batch_size))
        self.state = TrainState(0, 1.0, torch.zeros(self.sae.d_local, dtype=torch.long, device=self.device), 1.0)
        self.first_nonfinite = torch.tensor(NO_STEP, device=self.device)
        """The first step whose loss was NaN or infinite, on the device (read only at logging steps and writes)."""
        self.checkpoint_step: int | None = None
        """The step of the checkpoint on disk that this run wrote or resumed from."""
        self.clock: Callable[[], float] = time.monotonic
        """Wall time for the checkpoint cadence (tests substitute a fake one)."""
        self.last_checkpoint_at, self.last_save_s = self.clock(), 0.0
        self.autocast = autocast(self.device, enabled=cfg.dtype == "bfloat16")
        if cfg.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"unknown compute dtype {cfg.dtype!r}; choose auto, bfloat16 or float32")
        if cfg.shuffle_rows < 1:
            raise ValueError(f"the shuffle buffer must hold at least one row (shuffle_rows={cfg.shuffle_rows})")

    # --- setup ------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialize_from_data(self) -> None:
        """Input and target scales from the mean norms of a sample, and b_dec at the scaled targets' geometric median.

        Both are scaled to mean norm sqrt(width): for an SAE they are one scale (the target is the input); a
        transcoder's MLP output gets its own (`SAE.fold_scales_`).
        """
        x_ND, y_ND = self.sae.split_rows(self.data.head(INIT_SAMPLE_ROWS).to(self.device))
        if self.cfg.normalize:
            self.state.input_scale = math.sqrt(x_ND.shape[1]) / x_ND.norm(dim=1).mean().clamp_min(1e-12).item()
            self.state.output_scale = math.sqrt(y_ND.shape[1]) / y_ND.norm(dim=1).mean().clamp_min(1e-12).item()
        self.sae.b_dec.copy_(geometric_median(y_ND * self.state.output_scale))
        # Every rank computed the same start; rank 0's copy is made everyone's so no device quirk can split them.
        self.state.input_scale = self.batch_dist.broadcast_object(self.state.input_scale)
        self.state.output_scale = self.batch_dist.broadcast_object(self.state.output_scale)
        self.batch_dist.broadcast_(list(self.sae.parameters()))

    # --- one step ---------------------------------------------------------------------------------

    def step(self, x_ND: torch.Tensor) -> dict[str, float] | None:
        """One optimiser step on this rank's share of a batch of raw activations; the log's figures on logging steps."""
        cfg, sae, state = self.cfg, self.sae, self.state
        x_ND = sae.scale_rows(x_ND, state.input_scale, state.output_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr_factor(state.step, cfg.total_steps, cfg.warmup_fraction, cfg.decay_fraction)
        sparsity_scale = min(1.0, (state.step + 1) / max(1, round(cfg.total_steps * cfg.sparsity_warmup_fraction)))
        with self.autocast:
            out = sae.training_forward(x_ND, dead_F=state.since_fired_F >= self.dead_after, sparsity_scale=sparsity_scale)
        self.first_nonfinite = torch.where(torch.isfinite(out.loss.detach()), self.first_nonfinite,
                                           self.first_nonfinite.clamp(max=state.step + 1))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.batch_dist.mean_grads_(list(sae.parameters()))
        if sae.unit_norm_decoder:
            sae.remove_parallel_grad_()
        self.optimizer.step()
        if sae.unit_norm_decoder:
            sae.normalize_decoder_()
        state.since_fired_F += len(x_ND) * self.batch_dist.world
        state.since_fired_F[self.batch_dist.any(out.fired_F)] = 0
        state.step += 1
        if state.step % cfg.log_every and state.step != cfg.total_steps:
            return None
        return self._figures(out, x_ND)

    def _figures(self, out: TrainOutput, x_ND: torch.Tensor) -> dict[str, float]:
        """Loss terms, L0, batch FVU (of the target: a transcoder's MLP output) and dead fraction as plain floats,
        over the whole global batch."""
        dist, shards = self.batch_dist, self.sae.runtime.shards
        y_ND = self.sae.split_rows(x_ND)[1]
        fvu = dist.sum((out.x_hat_ND.float() - y_ND).pow(2).sum()) / dist.centred_ss(y_ND).clamp_min(1e-12)
        names = [*out.losses, "loss", "l0"]
        values = torch.stack([v.detach().float() for v in (*out.losses.values(), out.loss, out.l0)])
        means = (dist.sum(values) / dist.world).tolist()
        return {
            **dict(zip(names, means)),
            "fvu": float(fvu),
            "dead_fraction": float(shards.sum((self.state.since_fired_F >= self.dead_after).sum()))
            / (len(self.state.since_fired_F) * shards.world),
        }

    # --- checkpoints ------------------------------------------------------------------------------

    @property
    def checkpoint_file(self) -> str:
        """One checkpoint for replicated ranks (rank 0 writes it), one per shard when features are split."""
        return artifact.checkpoint_file(self.dist.rank if self.sae.runtime.shards.active else None)

    def save_checkpoint(self, log: TrainingLog | None = None) -> None:
        """Weights, optimiser, counters and step, written atomically by rank 0 or by every shard; noted in `log`.

        The log line comes first: a kill between the two leaves a line past the checkpoint on disk, which
        a resume drops, never a checkpoint the log does not show.
        """
        self.require_finite()
        if log is not None:
            log.write({"step": self.state.step, "tokens": self.state.step * self.cfg.batch_size,
                       "checkpoint": self.checkpoint_file})
        if self.dist.is_main or self.sae.runtime.shards.active:
            self._write_checkpoint()
        self.checkpoint_step = self.state.step

    def _write_checkpoint(self) -> None:
        """torch.save of the resume state to a temporary file renamed over the checkpoint: a kill leaves the old one."""
        payload = {
            "step": self.state.step,
            "input_scale": self.state.input_scale,
            "output_scale": self.state.output_scale,
            "since_fired_F": self.state.since_fired_F,
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sae_cfg": self.sae.cfg.to_dict(),
            "train_cfg": asdict(self.cfg),
            "data_rows": self.data_rows,
        }
        atomic_write(self.out / self.checkpoint_file, lambda tmp: torch.save(payload, tmp))

    def load_checkpoint(self) -> None:
        """Continue from the checkpoint in the output directory, which must come from the same configs."""
        path = self.out / self.checkpoint_file
        payload = torch.load(path, weights_only=True, map_location=self.device)
        if payload["sae_cfg"] != self.sae.cfg.to_dict() or run_identity(payload["train_cfg"]) != run_identity(asdict(self.cfg)):
            raise ValueError(f"{path} was written by a run with other settings; resume with the same options")
        if payload.get("data_rows", self.data_rows) != self.data_rows:
            raise ValueError(f"{path} was written by a run over {payload['data_rows']} activation rows, these are "
                             f"{self.data_rows}; resume over the same rows (and the same --skip-nonfinite)")
        self.sae.load_state_dict(payload["sae"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(payload["step"], payload["input_scale"], payload["since_fired_F"],
                                payload.get("output_scale", payload["input_scale"]))
        self.checkpoint_step = self.state.step

    @property
    def data_rows(self) -> int | None:
        """Rows of stored activations (None for a model stream): the stream's positions refer to them."""
        return getattr(self.data, "n_rows", None)

    def require_finite(self, across_ranks: bool = False) -> None:
        """Stop once a loss or a weight is NaN or infinite, so nothing non-finite is ever written.

        Steps only note the first non-finite loss on the device; reading it costs a host sync, so it is
        read on logging steps (over all ranks, which reach them together) and, with the weights, before
        each write. A run stopped so keeps its last checkpoint, which was checked the same way.
        """
        step = int(self.dist.min(self.first_nonfinite) if across_ranks else self.first_nonfinite)
        if step != NO_STEP:
            what = f"the loss became NaN or infinite at step {step} of {self.cfg.total_steps}"
        elif across_ranks or all(all_finite(p.detach()) for p in self.sae.parameters()):
            return
        else:
            what = f"the SAE's weights became NaN or infinite by step {self.state.step}"
        kept = ("no checkpoint was written yet" if self.checkpoint_step is None else
                f"{self.out / self.checkpoint_file} (step {self.checkpoint_step}) is kept")
        raise NonFiniteError(f"{what}; training stopped and {kept}. Train again with a lower --lr or --dtype float32")

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, resume: bool = False, on_step: Callable[[int], None] | None = None) -> SAE:
        """Train to the budget and write the final SAE; `on_step` sees each finished step (tests use it)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (self.out / self.checkpoint_file).is_file():
            self.load_checkpoint()
        else:
            self.initialize_from_data()
        log = TrainingLog(self.out, keep_through_step=self.state.step) if self.dist.is_main else None
        batches = self.data.rank_batches(self.cfg.batch_size, self.cfg.seed, self.state.step * self.cfg.batch_size,
                                         self.cfg.shuffle_rows, self.batch_dist)
        self._loop(prefetch_to(batches, self.device), log, on_step)
        if self.cfg.keep_checkpoint and self.checkpoint_step != self.state.step:
            self.save_checkpoint(log)
        sae = self.finish()
        self.dist.barrier()  # no rank returns before rank 0's files are on disk
        if not self.cfg.keep_checkpoint and (self.dist.is_main or self.sae.runtime.shards.active):
            (self.out / self.checkpoint_file).unlink(missing_ok=True)  # the SAE on disk supersedes it
        return sae

    def _loop(self, batches: Iterator[torch.Tensor], log: TrainingLog | None,
              on_step: Callable[[int], None] | None) -> None:
        cfg, state = self.cfg, self.state
        bar = tqdm(total=cfg.total_steps * cfg.batch_size, initial=state.step * cfg.batch_size, unit="tok",
                   unit_scale=True, disable=not cfg.progress or not self.dist.is_main, dynamic_ncols=True)
        started, start_step = time.monotonic(), state.step
        self.last_checkpoint_at = self.clock()
        postfix = {"ckpt": "none" if self.checkpoint_step is None else self.checkpoint_step}
        with bar:
            while state.step < cfg.total_steps:
                figures = self.step(next(batches))
                bar.update(cfg.batch_size)
                rate = (state.step - start_step) * cfg.batch_size / max(1e-9, time.monotonic() - started)
                if figures is not None:
                    self.require_finite(across_ranks=True)
                    if log is not None:
                        log.write({"step": state.step, "tokens": state.step * cfg.batch_size, **figures,
                                   "tokens_per_s": round(rate)})
                    postfix.update(loss=f"{figures['loss']:.4g}", l0=f"{figures['l0']:.1f}",
                                   dead=f"{figures['dead_fraction']:.3f}", tok_s=f"{rate:.3g}")
                    bar.set_postfix(postfix)
                if self._checkpoint_due():
                    self._timed_checkpoint(log)
                    postfix["ckpt"] = state.step
                    bar.set_postfix(postfix)
                if on_step is not None:
                    on_step(state.step)

    @property
    def checkpoint_steps(self) -> int:
        """Steps between checkpoints by rows (0: by time only): checkpoint_every_tokens, or a tenth of the run.

        Why both clocks: a minute bounds what a kill costs on a long run; a tenth of the budget bounds it
        on a short fast one, where a minute may be the whole run and a kill would otherwise restart it.
        The default tenths, like the minute, wait until 20 saves' time has passed since the last checkpoint:
        on a 20-second run a tenth is 2 s of training, against nine saves of 113 MB of weights and Adam's state
        (8192 x 576) that would otherwise all be written. Tenths asked for are kept exactly.
        """
        every = self.cfg.checkpoint_every_tokens
        if every is None:
            return math.ceil(self.cfg.total_steps / CHECKPOINTS_PER_RUN)
        return max(1, round(every / self.cfg.batch_size)) if every else 0

    def _checkpoint_due(self) -> bool:
        """Whether to checkpoint after this step; never after the last unless the checkpoint is to be kept."""
        if self.state.step == self.cfg.total_steps and not self.cfg.keep_checkpoint:
            return False
        every, since = self.checkpoint_steps, self.clock() - self.last_checkpoint_at
        affordable = since >= SAVE_COST_RATIO * self.last_save_s
        if every and self.state.step % every == 0 and (affordable or self.cfg.checkpoint_every_tokens is not None):
            return True
        due = affordable and since >= self.cfg.checkpoint_every_s
        # Shards checkpoint together (rank 0's clock decides), or a resume would mix steps.
        return bool(self.sae.runtime.shards.broadcast_object(due)) if self.sae.runtime.shards.active else due

    def _timed_checkpoint(self, log: TrainingLog | None) -> None:
        """Save a checkpoint and time it: the next is due no sooner than SAVE_COST_RATIO saves' time later."""
        started = self.clock()
        self.save_checkpoint(log)
        self.last_checkpoint_at = self.clock()
        self.last_save_s = self.last_checkpoint_at - started

    def finish(self) -> SAE:
        """The trained SAE acting on raw activations (on the CPU), saved in SAELens layout by rank 0."""
        self.require_finite()
        sae = self.sae.unsharded()
        sae.fold_scales_(self.state.input_scale, self.state.output_scale)
        if not sae.unit_norm_decoder:
            sae.fold_decoder_norm_()
        if self.dist.is_main:
            sae.save(self.out)
        return sae.eval()


def sae_config_for(data: TrainingData, architecture: str, d_sae: int, *, k: int | None = None,
                   **fields: Any) -> SAEConfig:
    """An SAE config for a source's activations: width and provenance from the source; k only where it applies.

    """
    cls = sae_class(architecture)
    return SAEConfig(architecture=architecture, d_in=cls.d_in_of_rows(data.d_in), d_sae=d_sae,
                     k=k if cls.takes_k else None, provenance=data.provenance, **{**cls.config_defaults, **fields})


def train(sae_cfg: SAEConfig, cfg: TrainConfig, data: TrainingData, out: str | Path, resume: bool = False,
          dist: Dist | None = None, shard_features: bool = False) -> SAE:
    """Train an SAE and write it, its training log and a checkpoint to `out` (on `dist`'s ranks and device)."""
    return Trainer(sae_cfg, cfg, data, Path(out), dist, shard_features).run(resume=resume)
