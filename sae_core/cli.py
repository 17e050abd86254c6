"""The library's commands (`python -m sae_core`): parse arguments, call the library, hold no logic of their own.

The app's `saescope` offers the same commands, registered on its own Typer with `new_cli`, plus the store's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import typer

from .activations import open_activations
from .attribution.command import attribute_command
from .attribution.replacement_command import replacement_graph_command
from .cli_options import USER_ERRORS, DatasetOpt, DeviceOpt, DistributedOpt, ModelOpt, SkipNonFiniteOpt, run
from .config import HarvestConfig
from .console import fail
from .contrast import contrast, read_texts
from .distributed import close_distributed, init_distributed
from .evaluate import ce_on_corpus, evaluate_activations
from .harvest import describe
from .harvest import harvest as run_harvest
from .lm import load_model
from .saes import load_sae
from .saes.artifact import sae_directory, write_metrics
from .saes.convert import SET_WRITERS, WRITERS, convert_sae
from .sites import valid_sites
from .train_command import train

__all__ = ["DatasetOpt", "DeviceOpt", "DistributedOpt", "ModelOpt", "fail", "new_cli", "run"]

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


def main() -> None:
    """Console-script entry point of the library alone."""
    run(app)
