"""`saescope train`: apart from the other commands, so that running it imports only what training needs.

The console script loads a command's module when that command runs (app/entry.py); this one reaches neither
transformers nor the store, which the other commands' modules import (about 4 s of a 30 s training run).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .cli_options import USER_ERRORS, DatasetOpt, DeviceOpt, DistributedOpt, SkipNonFiniteOpt
from .config import HarvestConfig, TrainConfig
from .console import fail, warn
from .devices import slow_bf16_note
from .distributed import close_distributed, init_distributed
from .evaluate import evaluate_activations
from .lm import load_model
from .saes import SAEConfig, transcodes
from .saes.artifact import write_metrics
from .train import sae_config_for
from .train import train as run_train
from .training_jobs import stored_jobs, streamed_job


def train(
    activations: Path | None = typer.Option(
        None, "--activations", help="Harvest directory, [N, d] .npy, or .safetensors with `activations`."),
    out: Path = typer.Option(..., "--out", help="Directory for the SAE (SAELens layout), log and metrics; for a "
                                                "harvest at several sites, for one such directory per site."),
    arch: str = typer.Option("topk", "--arch", help="relu, topk, batchtopk or jumprelu; or a transcoder (on a harvest "
                                                    "of layers.N.mlp): transcoder (TopK), jumprelu_transcoder or "
                                                    "relu_transcoder."),
    skip: bool = typer.Option(False, "--skip", help="Transcoders: add a linear skip term x @ W_skip.T (skip transcoder)."),
    features: int = typer.Option(8192, "--features", help="Dictionary size (d_sae)."),
    k: int = typer.Option(32, "--k", help="topk/batchtopk: active features per token."),
    tokens: int | None = typer.Option(None, "--tokens", help="Training budget in rows (default: one pass over the data)."),
    l1: float = typer.Option(SAEConfig.l1_coefficient, "--l1", help="relu: L1 coefficient."),
    l0: float = typer.Option(SAEConfig.l0_coefficient, "--l0", help="jumprelu: L0 coefficient."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default scales with --features)."),
    batch_size: int = typer.Option(TrainConfig.batch_size, "--batch-size", help="Rows per step."),
    seed: int = typer.Option(TrainConfig.seed, "--seed", help="Seeds initialisation and data order."),
    dtype: str = typer.Option(TrainConfig.dtype, "--dtype",
                              help="Compute dtype: auto (bfloat16 where the device has fast bf16 matmuls: CUDA, "
                                   "AMX CPUs, and AVX512-BF16 ones where a timed matmul says so; else float32), "
                                   "bfloat16 or float32 (exact)."),
    holdout: int | None = typer.Option(None, "--holdout", help="Rows held out for metrics.json (default: 10%, at most 65536)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out."),
    checkpoint_every_s: float = typer.Option(TrainConfig.checkpoint_every_s, "--checkpoint-every-s",
                                             help="Seconds between checkpoints (longer when a save is slow)."),
    checkpoint_every_tokens: int | None = typer.Option(
        None, "--checkpoint-every-tokens", help="Also checkpoint every this many rows (default: a tenth of --tokens; 0: off)."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint",
                                         help="Keep a checkpoint of the finished run (with Adam's state, ~3x the SAE)."),
    shuffle_rows: int = typer.Option(TrainConfig.shuffle_rows, "--shuffle-rows",
                                     help="Rows held in the shuffle buffer: bounds the data's memory."),
    skip_nonfinite: bool = SkipNonFiniteOpt,
    model: str | None = typer.Option(None, "--model", help="Instead of --activations: stream from this model (needs --tokens)."),
    dataset: str = DatasetOpt,
    site: str | None = typer.Option(
        None, "--site", help=f"With --model: hook site to stream (default {HarvestConfig.site}); with a bare "
        "array: the site it was read at, recorded in cfg.json (else SAELens's hook_name is 'unknown')."),
    context: int = typer.Option(HarvestConfig.context_len, "--context", help="With --model: tokens per context."),
    holdout_contexts: int = typer.Option(16, "--holdout-contexts", help="With --model: first contexts kept for metrics.json."),
    device: str = DeviceOpt,
    distributed: bool = DistributedOpt,
    shard_features: bool = typer.Option(False, "--shard-features",
                                        help="topk under torchrun: split the features over the ranks."),
) -> None:
    """Train an SAE on activations (or streamed from a model); writes the SAE, training_log.jsonl, metrics.json.

    Under `torchrun --nproc-per-node N -m sae_core train ...` the ranks train data-parallel, or with
    --shard-features each holds 1/N of the dictionary.
    """
    if (activations is None) == (model is None) or (model is not None and tokens is None):
        fail("give --activations, or --model with --tokens to stream activations from the model")
    if skip_nonfinite and model is not None:
        fail("--skip-nonfinite applies to --activations; a streamed row cannot be skipped (harvest with it instead)")
    results: dict[str, dict] = {}
    try:
        pairs = transcodes(arch)
        if pairs and model is not None:
            fail("a transcoder trains on a harvest of MLP inputs and outputs (--activations of a harvest at "
                 "layers.N.mlp), not on a stream")
        dist = init_distributed(device, require=distributed)
        if dist.is_main and (note := slow_bf16_note(dtype, dist.device)):
            warn(note)
        if activations is not None:
            jobs = stored_jobs(activations, out, tokens, holdout, skip_nonfinite, dist, site, pairs=pairs)
        else:
            assert model is not None and tokens is not None  # checked above
            lm = load_model(model, device=str(dist.device))
            jobs = [streamed_job(lm, site or HarvestConfig.site, dataset, context, holdout_contexts, tokens, out)]
        for job in jobs:  # one after another in this process: each SAE is what training it alone makes
            sae_cfg = sae_config_for(job.rows, arch, features, k=k, l1_coefficient=l1, l0_coefficient=l0,
                                     skip_connection=skip)
            cfg = TrainConfig(tokens=job.budget, batch_size=batch_size, lr=lr, seed=seed, dtype=dtype,
                              checkpoint_every_s=checkpoint_every_s, checkpoint_every_tokens=checkpoint_every_tokens,
                              keep_checkpoint=keep_checkpoint, shuffle_rows=shuffle_rows)
            sae = run_train(sae_cfg, cfg, job.rows, job.out, resume=resume, dist=dist, shard_features=shard_features)
            metrics = ({**evaluate_activations(sae, job.heldout), "eval_rows": job.eval_rows, **job.extra}
                       if job.heldout is not None and dist.is_main else {})
            if metrics:
                write_metrics(job.out, metrics)
            results[job.site] = metrics
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    finally:
        close_distributed()
    if dist.is_main:
        typer.echo(json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2))
