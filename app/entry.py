"""The `saescope` console script. A command whose module imports little runs without loading the rest.

The whole CLI (app/cli.py) imports the web app, the store and transformers: 5.3 s of imports on 2 cores, against
1.6 s for what `saescope train` needs, on a training run of 20-30 s. So a command listed in APART is run from a
CLI holding it alone; every other command, and `saescope --help`, from the whole CLI, as before.
"""

from __future__ import annotations

import importlib
import sys

import typer

from sae_core.cli_options import run

APART = {"train": "sae_core.train_command:train"}
"""Commands run alone, by module and function: each must be the whole CLI's command of that name."""


def apart(name: str) -> typer.Typer:
    """A CLI holding only the command `name` (a group, so that it is invoked by its name as in the whole CLI)."""
    module, function = APART[name].split(":")
    cli = typer.Typer(add_completion=False, help="Sparse-autoencoder workbench.")
    cli.callback()(lambda: None)
    cli.command(name)(getattr(importlib.import_module(module), function))
    return cli


def main() -> None:
    """Console-script entry point."""
    name = sys.argv[1] if len(sys.argv) > 1 else None
    if name in APART:
        run(apart(name))
        return
    from .cli import app

    run(app)
