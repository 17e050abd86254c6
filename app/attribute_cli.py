"""`saescope attribute`: the library's command, which also takes a stored set of SAEs by name or id."""

from __future__ import annotations

from pathlib import Path

import typer

from sae_core.attribution.command import (
    ContrastOpt,
    CorruptedOpt,
    ExportOpt,
    KeepBosOpt,
    MaxNodesOpt,
    MethodOpt,
    ModelIdOpt,
    PositionOpt,
    PromptOpt,
    StepsOpt,
    TargetOpt,
    TopOpt,
    VerifyOpt,
    attribute_command,
)
from sae_core.console import fail
from sae_core.lm import DEFAULT_MODEL

from . import crud
from .cli_store import DB_OPTION, open_session


def attribute_with_store(
    sae_set: str | None = typer.Option(None, "--sae-set", help="A stored set of SAEs, by name or id."),
    sae: str | None = typer.Option(None, "--sae", help="Or SAE directories, comma-separated (one per site)."),
    prompt: str = PromptOpt,
    target: str | None = TargetOpt,
    contrast: str | None = ContrastOpt,
    corrupted: str | None = CorruptedOpt,
    position: int | None = PositionOpt,
    method: str = MethodOpt,
    steps: int = StepsOpt,
    verify: int = VerifyOpt,
    top: int = TopOpt,
    max_nodes: int = MaxNodesOpt,
    model: str | None = typer.Option(None, "--model", help="With --sae: the model (default smollm2); a set "
                                                           "names its own."),
    export: Path | None = ExportOpt,
    keep_bos: bool = KeepBosOpt,
    model_id: str | None = ModelIdOpt,
    db: str | None = DB_OPTION,
) -> None:
    """Which features make the model predict --target: node effects, exact check of the largest, graph."""
    if (sae_set is None) == (sae is None):
        fail("give --sae-set (a stored set) or --sae (SAE directories), not both")
    if sae_set is not None:
        sae, model = _set_directories(sae_set, db)
    attribute_command(sae or "", prompt, target, contrast, corrupted, position, method, steps, verify, top, max_nodes,
                      model or DEFAULT_MODEL, export, keep_bos=keep_bos, model_id=model_id)


def _set_directories(ref: str, db: str | None) -> tuple[str, str]:
    """The directories of a stored set's SAEs (forward order) and the spec of their model."""
    with open_session(db) as session:
        try:
            _set, saes = crud.set_saes(session, ref=ref)
        except crud.NotFound as err:
            fail(str(err))
        missing = [s.name for s in saes if not s.source_path]
        if missing:
            fail(f"the set's SAE {missing[0]!r} has no directory on record to load it from")
        return ",".join(s.source_path for s in saes), saes[0].model_spec or saes[0].model_name
