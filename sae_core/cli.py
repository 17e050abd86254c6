"""The library's commands (`python -m sae_core`): parse arguments, call the library, hold no logic of their own.

The app's `saescope` offers the same commands, registered on its own Typer with `new_cli`, plus the store's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import typer

from .activations import ActivationsError, open_activations
from .allocator import keep_freed_memory
from .attribution.command import attribute_command
from .attribution.replacement_command import replacement_graph_command
from .config import HarvestConfig, TrainConfig
from .console import fail
from .contrast import contrast, read_texts
from .data import CorpusError
from .distributed import close_distributed, init_distributed
from .evaluate import ce_on_corpus, evaluate_activations
from .harvest import HarvestError, describe
from .harvest import harvest as run_harvest
from .lm import DEFAULT_MODEL, ModelLoadError, load_model
from .saes import SAEConfig, SAEFormatError, load_sae, transcodes
from .saes.artifact import sae_directory, write_metrics
from .saes.convert import SET_WRITERS, WRITERS, convert_sae
from .sites import SiteError, valid_sites
from .train import sae_config_for
from .train import train as run_train
from .training_jobs import stored_jobs, streamed_job

# Errors that come from user input: shown as one line, never as a traceback.
USER_ERRORS = (ModelLoadError, SiteError, CorpusError, HarvestError, ActivationsError, SAEFormatError, ValueError)

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", help="Model name, directory, .gguf file or hub id.")
DatasetOpt = typer.Option("demo", "--dataset", help="`demo`, a .txt/.jsonl/.parquet file or folder, or a hub dataset.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
DistributedOpt = typer.Option(False, "--distributed", help="Insist on torchrun's environment (torchrun is detected anyway).")
SkipNonFiniteOpt = typer.Option(False, "--skip-nonfinite",
                                help="Leave out and count rows holding NaN or infinities (default: stop at the first).")


def sites(model: str = ModelOpt) -> None:
    """List the hook sites a model offers."""
    try:
        lm = load_model(model)
    except USER_ERRORS as err:
        fail(str(err))
    typer.echo("\n".join(valid_sites(lm.model)))


def harvest(
    out: Path = typer.Option(..., "--out", help="Directory for the shards and manifest."),
    model: str = ModelOpt,
    site: str = typer.Option(HarvestConfig.site, "--site",
                             help="Hook site, e.g. layers.6.resid_post, or several comma-separated (one forward "
                                  "pass writes each into its own directory under --out); layers.N.mlp is the MLP's "
                                  "input and output (a transcoder's pairs), layers.A-B.kind the kind at layers A..B."),
    dataset: str = DatasetOpt,
    text_field: str = typer.Option(HarvestConfig.text_field, "--text-field", help="Field/column holding the text."),
    tokens: int = typer.Option(HarvestConfig.tokens, "--tokens", help="Activation rows to write."),
    context: int = typer.Option(HarvestConfig.context_len, "--context", help="Tokens per context, BOS included."),
    batch_size: int = typer.Option(HarvestConfig.batch_size, "--batch-size", help="Contexts per forward pass."),
    dtype: str = typer.Option(HarvestConfig.dtype, "--dtype", help="Storage dtype of the activations."),
    model_dtype: str = typer.Option(HarvestConfig.model_dtype, "--model-dtype", help="Compute dtype of the model."),
    shard_tokens: int = typer.Option(HarvestConfig.shard_tokens, "--shard-tokens",
                                     help="Rows per shard file (the unit of atomic writes and of resume)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue an interrupted harvest in --out, or extend it to a larger --tokens."),
    skip_nonfinite: bool = SkipNonFiniteOpt,
    device: str = DeviceOpt,
    distributed: bool = DistributedOpt,
) -> None:
    """Run a model over a corpus and write its activations at one or more sites to disk (split by rank under torchrun)."""
    cfg = HarvestConfig(model=model, site=site, dataset=dataset, text_field=text_field, tokens=tokens,
                        context_len=context, batch_size=batch_size, dtype=dtype, model_dtype=model_dtype,
                        shard_tokens=shard_tokens, skip_nonfinite=skip_nonfinite)
    try:
        dist = init_distributed(device, require=distributed)
        manifest = run_harvest(cfg, out, resume=resume, dist=dist)
    except USER_ERRORS as err:
        fail(str(err))
    finally:
        close_distributed()
    if dist.is_main:
        typer.echo(f"{describe(manifest)} to {out}")


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
                                   "AMX or AVX512-BF16 CPUs; else float32), bfloat16 or float32 (exact)."),
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


def evaluate(
    sae: Path = typer.Option(..., "--sae", help="SAE directory or file in any supported layout."),
    activations: Path | None = typer.Option(None, "--activations", help="Activations to measure reconstruction on."),
    max_rows: int | None = typer.Option(None, "--max-rows", help="Evaluate on at most this many rows."),
    model: str | None = typer.Option(None, "--model", help="With --dataset: also measure CE loss with the SAE spliced in."),
    dataset: str = DatasetOpt,
    contexts: int = typer.Option(64, "--contexts", help="Contexts for the CE evaluation."),
    context: int = typer.Option(128, "--context", help="Tokens per context, BOS included."),
    skip_contexts: int = typer.Option(0, "--skip-contexts", help="Contexts of the corpus to skip (e.g. those trained on)."),
    save: bool = typer.Option(False, "--save", help="Merge the figures into metrics.json beside the SAE."),
    skip_nonfinite: bool = SkipNonFiniteOpt,
) -> None:
    """Print an SAE's metrics as JSON: mse, fvu, explained variance, l0, dead/dense fractions, CE loss recovered."""
    if activations is None and model is None:
        fail("give --activations (reconstruction metrics), --model (CE loss), or both")
    try:
        loaded = load_sae(sae)
        metrics = {}
        if activations is not None:
            source = open_activations(activations, skip_nonfinite=skip_nonfinite)
            metrics = evaluate_activations(loaded, source, max_rows)
            if skip_nonfinite:
                metrics["nonfinite_rows_skipped"] = source.nonfinite_skipped
        if model is not None:
            metrics.update(ce_on_corpus(load_model(model), loaded, dataset, n_contexts=contexts, context_len=context,
                                        skip_contexts=skip_contexts))
        if save:
            write_metrics(sae_directory(sae), metrics)
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo(json.dumps(metrics, indent=2))


def contrast_command(
    sae: Path = typer.Option(..., "--sae", help="SAE directory or file in any supported layout."),
    a: Path = typer.Option(..., "--a", help="Set A: a text file, one text per line."),
    b: Path = typer.Option(..., "--b", help="Set B: a text file, one text per line."),
    model: str = ModelOpt,
    top: int = typer.Option(20, "--top", min=1, help="Features to show, by size of effect."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per feature instead of a table."),
) -> None:
    """Rank features by Cohen's d between the texts of A and B, with how often each fires in either set."""
    try:
        features = contrast(load_model(model), load_sae(sae), read_texts(a), read_texts(b)).top(top)
    except (*USER_ERRORS, OSError) as err:
        fail(str(err).splitlines()[0])
    if as_json:
        typer.echo("\n".join(json.dumps(asdict(f)) for f in features))
        return
    typer.echo(f"{'feature':>8} {'d':>7} {'mean A':>9} {'mean B':>9} {'fires A':>8} {'fires B':>8}")
    for f in features:
        typer.echo(f"{f.feature:>8} {f.effect:>7.2f} {f.mean_a:>9.4g} {f.mean_b:>9.4g} {f.fired_a:>8.0%} {f.fired_b:>8.0%}")


def convert(
    sae: Path = typer.Option(..., "--sae", help="SAE directory or file in any supported layout."),
    to: str = typer.Option(..., "--to", help=f"Layout to write: {', '.join([*WRITERS, *SET_WRITERS])} (a transcoder "
                                             "set directory)."),
    out: Path = typer.Option(..., "--out", help="Empty directory to write it into."),
) -> None:
    """Write an SAE in SAELens's or sparsify's layout, or a transcoder set in circuit-tracer's, for that tool's own
    loader (docs/formats.md)."""
    try:
        converted = convert_sae(sae, out, to)
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    first = converted[0].cfg
    what = f"{len(converted)} {first.architecture}s" if len(converted) > 1 else f"{first.architecture} SAE"
    typer.echo(f"wrote {what} ({first.d_sae} features) in {to} layout to {out}")


COMMANDS: dict[str, Callable[..., None]] = {"sites": sites, "harvest": harvest, "train": train, "eval": evaluate,
                                            "contrast": contrast_command, "convert": convert,
                                            "attribute": attribute_command,
                                            "replacement-graph": replacement_graph_command}
"""The library's commands by name, for any CLI that offers them (this one, and the app's `saescope`)."""


def new_cli(replace: Mapping[str, Callable[..., None]] | None = None) -> typer.Typer:
    """A fresh Typer holding the library's commands; the app's `saescope` builds its own, with `replace` giving
    store-aware versions of some (in the same place of the list), and adds the store's."""
    cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Sparse-autoencoder workbench.")
    for name, command in (COMMANDS | dict(replace or {})).items():
        cli.command(name)(command)
    return cli


app = new_cli()
"""`python -m sae_core`: the library's commands, whatever else is imported."""


def run(cli: typer.Typer) -> None:
    """Run `cli` as a console script does, with the allocator set for batch loops."""
    keep_freed_memory()  # batch loops reuse their big temporaries instead of page-faulting them in again
    cli()


def main() -> None:
    """Console-script entry point of the library alone."""
    run(app)
