"""The `saescope` command: parses arguments, calls the library, holds no logic of its own."""

from __future__ import annotations

from pathlib import Path

import typer

from .config import HarvestConfig
from .data import CorpusError
from .harvest import HarvestError, harvest as run_harvest
from .models import DEFAULT_MODEL, ModelLoadError, load_model
from .sites import SiteError, valid_sites

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sparse-autoencoder workbench.")

# Errors that come from user input: shown as one line, never as a traceback.
USER_ERRORS = (ModelLoadError, SiteError, CorpusError, HarvestError)

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", help="Model name, directory, .gguf file or hub id.")
DatasetOpt = typer.Option("demo", "--dataset", help="`demo`, a .txt/.jsonl/.parquet file or folder, or a hub dataset.")


def fail(message: str) -> None:
    """Print a one-line error and exit non-zero, without a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def sites(model: str = ModelOpt) -> None:
    """List the hook sites a model offers."""
    try:
        lm = load_model(model)
    except USER_ERRORS as err:
        fail(str(err))
    typer.echo("\n".join(valid_sites(lm.model)))


@app.command()
def harvest(
    out: Path = typer.Option(..., "--out", help="Directory for the shards and manifest."),
    model: str = ModelOpt,
    site: str = typer.Option(HarvestConfig.site, "--site", help="Hook site, e.g. layers.6.resid_post."),
    dataset: str = DatasetOpt,
    text_field: str = typer.Option(HarvestConfig.text_field, "--text-field", help="Field/column holding the text."),
    tokens: int = typer.Option(HarvestConfig.tokens, "--tokens", help="Activation rows to write."),
    context: int = typer.Option(HarvestConfig.context_len, "--context", help="Tokens per context, BOS included."),
    batch_size: int = typer.Option(HarvestConfig.batch_size, "--batch-size", help="Contexts per forward pass."),
    dtype: str = typer.Option(HarvestConfig.dtype, "--dtype", help="Storage dtype of the activations."),
    model_dtype: str = typer.Option(HarvestConfig.model_dtype, "--model-dtype", help="Compute dtype of the model."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted harvest in --out."),
) -> None:
    """Run a model over a corpus and write its activations at one site to disk."""
    cfg = HarvestConfig(model=model, site=site, dataset=dataset, text_field=text_field, tokens=tokens,
                        context_len=context, batch_size=batch_size, dtype=dtype, model_dtype=model_dtype)
    try:
        manifest = run_harvest(cfg, out, resume=resume)
    except USER_ERRORS as err:
        fail(str(err))
    typer.echo(f"wrote {manifest['n_tokens']} activations of {manifest['model']} at {manifest['site']} to {out}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for every stage's output."),
         model: str = ModelOpt,
         site: str = typer.Option(HarvestConfig.site, "--site", help="Hook site."),
         dataset: str = DatasetOpt,
         tokens: int = typer.Option(HarvestConfig.tokens, "--tokens", help="Training tokens to harvest.")) -> None:
    """The whole pipeline on the embedded defaults; finished stages are reused."""
    cfg = HarvestConfig(model=model, site=site, dataset=dataset, tokens=tokens)
    typer.echo(f"[1/1] harvesting {tokens} activations of {model} at {site} from {dataset}")
    try:
        manifest = run_harvest(cfg, out / "activations", resume=True)
    except USER_ERRORS as err:
        fail(str(err))
    typer.echo(f"      {manifest['n_tokens']} activations in {out / 'activations'}")


def main() -> None:
    """Console-script entry point."""
    app()
