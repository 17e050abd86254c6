"""What every command of the CLI shares: the errors shown as one line, the options several commands take, and
how a console script runs a CLI.

Its own module, light to import, so that a command living apart (`train_command`) needs nothing heavier.
"""

from __future__ import annotations

import typer

from .activations import ActivationsError
from .allocator import keep_freed_memory
from .data import CorpusError
from .harvest import HarvestError
from .lm import DEFAULT_MODEL, ModelLoadError
from .saes import SAEFormatError
from .sites import SiteError

# Errors that come from user input: shown as one line, never as a traceback.
USER_ERRORS = (ModelLoadError, SiteError, CorpusError, HarvestError, ActivationsError, SAEFormatError, ValueError)

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", help="Model name, directory, .gguf file or hub id.")
DatasetOpt = typer.Option("demo", "--dataset", help="`demo`, a .txt/.jsonl/.parquet file or folder, or a hub dataset.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
DistributedOpt = typer.Option(False, "--distributed", help="Insist on torchrun's environment (torchrun is detected anyway).")
SkipNonFiniteOpt = typer.Option(False, "--skip-nonfinite",
                                help="Leave out and count rows holding NaN or infinities (default: stop at the first).")


def run(cli: typer.Typer) -> None:
    """Run `cli` as a console script does, with the allocator set for batch loops."""
    keep_freed_memory()  # batch loops reuse their big temporaries instead of page-faulting them in again
    cli()
