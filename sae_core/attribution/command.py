"""`saescope attribute`: parse, load the model and SAEs, run attribution, print the table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..console import fail
from ..lm import DEFAULT_MODEL, ModelLoadError, load_model
from ..saes import SAEFormatError, load_sae
from ..sites import SiteError
from .config import AttributionConfig, AttributionError, AttributionRequest
from .dictionaries import dictionaries
from .inputs import next_tokens
from .neuronpedia import neuronpedia_graph, neuronpedia_name
from .run import attribute
from .table import node_table

ERRORS = (AttributionError, ModelLoadError, SAEFormatError, SiteError)


PromptOpt = typer.Option(..., "--prompt", help="The text whose next token is explained.")
TargetOpt = typer.Option(None, "--target", help="The predicted token (one token; leading space counts). "
                                                "Without it, the model's top next tokens are listed.")
ContrastOpt = typer.Option(None, "--contrast", help="Measure logit(target) - logit(contrast) instead.")
CorruptedOpt = typer.Option(None, "--corrupted", help="A same-length prompt to patch from (default: zero-ablation).")
PositionOpt = typer.Option(None, "--position", help="Position measured (default: the last).")
MethodOpt = typer.Option(AttributionConfig.method, "--method", help="patching or ig.")
StepsOpt = typer.Option(AttributionConfig.steps, "--steps", help="Integrated-gradients steps.")
VerifyOpt = typer.Option(AttributionConfig.verify_top, "--verify", help="Top nodes re-measured by ablation.")
TopOpt = typer.Option(20, "--top", help="Rows of the table.")
MaxNodesOpt = typer.Option(AttributionConfig.max_nodes, "--max-nodes", help="Nodes whose edges are computed.")
ExportOpt = typer.Option(None, "--export", help="Also write the graph as Neuronpedia graph JSON.")
KeepBosOpt = typer.Option(False, "--keep-bos", help="Make nodes at the BOS too (by default it is held at its clean "
                                                    "value: an attention sink whose ablation misleads).")
ModelIdOpt = typer.Option(None, "--model-id", help="With --export: the model's id on Neuronpedia, e.g. gpt2-small "
                                                   "(default: made from the model's name).")
"""The options every `attribute` command shares (the app's adds --sae-set and --db)."""


def attribute_command(
    sae: str = typer.Option(..., "--sae", help="SAE directories, comma-separated (one per site, one model)."),
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
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model name, directory, .gguf file or hub id."),
    export: Path | None = ExportOpt,
    keep_bos: bool = KeepBosOpt,
    model_id: str | None = ModelIdOpt,
) -> None:
    """Which features make the model predict --target: node effects, exact check of the largest, graph."""
    try:
        lm = load_model(model)
        if target is None:
            rows = "\n".join(f"{text!r}\t{prob:.4f}" for text, prob in next_tokens(lm, prompt))
            typer.echo(f"give --target; the model's top next tokens:\n{rows}")
            return
        cfg = AttributionConfig(method=method, steps=steps, verify_top=verify, max_nodes=max_nodes,  # type: ignore[arg-type]
                                freeze_bos=not keep_bos)
        saes = [(path, load_sae(path)) for path in (p.strip() for p in sae.split(",")) if path]
        dicts = dictionaries(lm.model, lm.name, saes)
        graph = attribute(lm, dicts, AttributionRequest(prompt, target, contrast, corrupted, position), cfg)
        exported = None if export is None else neuronpedia_graph(
            graph, slug=neuronpedia_name(export.stem), scan=model_id or neuronpedia_name(lm.name))
    except ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo(node_table(graph, top))
    if export is not None:
        export.write_text(json.dumps(exported))
        typer.echo(f"wrote {export}")
