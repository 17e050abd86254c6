"""How a command reports a user's mistake (one red line, exit status 2, no traceback) or a choice it doubts."""

from __future__ import annotations

import typer


def fail(message: str) -> None:
    """Print a one-line error and exit non-zero, without a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def warn(message: str) -> None:
    """Print a one-line warning and go on: the user asked for it, and may know better."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
