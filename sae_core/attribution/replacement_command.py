"""`saescope replacement-graph`: a prompt's replacement-model graph from a transcoder per layer, printed and
optionally written as Neuronpedia graph JSON (which circuit-tracer's and Neuronpedia's viewers open)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import typer
from transformers import PreTrainedTokenizerBase

from ..console import fail
from ..lm import DEFAULT_MODEL, ModelLoadError, load_model
from ..saes import SAE, SAEFormatError, load_sae
from .command import ExportOpt, ModelIdOpt, PromptOpt
from .config import AttributionConfig, AttributionError
from .frozen import FreezeError
from .inputs import one_token, prompt_ids, starts_special, token_text
from .neuronpedia import neuronpedia_name, replacement_graph_json
from .replacement import ReplacementError, ReplacementModel
from .replacement_graph import ReplacementConfig, ReplacementGraph, build_graph

ERRORS = (AttributionError, ModelLoadError, SAEFormatError, ReplacementError, FreezeError)


def transcoder_set(directory: Path) -> list[tuple[str, SAE]]:
    """Every transcoder in a set directory (`saescope train` on an MLP harvest writes one folder per layer)."""
    folders = sorted(directory.glob("layers.*.mlp_in"), key=lambda p: int(p.name.split(".")[1]))
    if not folders:
        raise ReplacementError(f"{directory} holds no layers.N.mlp_in folders: give the directory `saescope train "
                               "--arch transcoder` wrote for a harvest of every layer's MLP (layers.0-N.mlp)")
    return [(folder.name, load_sae(folder)) for folder in folders]


def parse_pin(spec: str) -> tuple[tuple[int, int, int], float]:
    """`LAYER:POS:FEATURE=VALUE` as ((layer, pos, feature), value)."""
    try:
        where, value = spec.split("=")
        layer, pos, feature = (int(part) for part in where.split(":"))
        return (layer, pos, feature), float(value)
    except ValueError:
        raise AttributionError("pin", f"--pin {spec!r} is not LAYER:POS:FEATURE=VALUE (e.g. 12:5:301=0)") from None


def top_tokens(tokenizer: PreTrainedTokenizerBase, logits_V: torch.Tensor, k: int = 5) -> str:
    """The k likeliest next tokens with their probabilities, as one line."""
    probs = torch.softmax(logits_V.double(), -1)
    values, ids = probs.topk(k)
    return ", ".join(f"{token_text(tokenizer, int(i))!r} {float(v):.3f}" for v, i in zip(values, ids))


def summary(graph: ReplacementGraph, tokens: list[str], logit_texts: list[str], node_threshold: float,
            edge_threshold: float, top: int) -> str:
    """The logits, the graph's size before and after pruning, its scores, and its most influential features."""
    pruned = graph.prune(node_threshold, edge_threshold)
    layout, whole, kept = graph.layout, graph.scores(), graph.scores(pruned)
    lines = ["outputs: " + ", ".join(f"{t!r} {float(p):.3f}" for t, p in zip(logit_texts, graph.logit_probabilities))]
    lines.append(f"{graph.active_features} active features, {layout.features} reached; {layout.size} nodes and "
                 f"{int((graph.adjacency != 0).sum())} edges, pruned to {int(pruned.nodes.sum())} nodes and "
                 f"{int(pruned.edges.sum())} edges (node {node_threshold}, edge {edge_threshold})")
    lines.append(f"replacement score {whole.replacement:.3f} (pruned {kept.replacement:.3f}), completeness "
                 f"{whole.completeness:.3f} (pruned {kept.completeness:.3f})")
    ranked = [n for n in pruned.cumulative.argsort().tolist() if n < layout.features and pruned.nodes[n]][:top]
    lines.append("layer\tpos\ttoken\tfeature\tactivation\tcumulative influence")
    lines += [f"{int(graph.feature_layer[n])}\t{int(graph.feature_pos[n])}\t{tokens[int(graph.feature_pos[n])]!r}\t"
              f"{int(graph.feature_index[n])}\t{float(graph.feature_activation[n]):.3f}\t{float(pruned.cumulative[n]):.3f}"
              for n in ranked]
    return "\n".join(lines)


def replacement_graph_command(
    transcoders: Path = typer.Option(..., "--set", help="Directory holding a transcoder per layer (layers.N.mlp_in)."),
    prompt: str = PromptOpt,
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model name, directory, .gguf file or hub id."),
    max_feature_nodes: int = typer.Option(ReplacementConfig.max_feature_nodes, "--max-feature-nodes",
                                          help="Most features whose incoming edges are computed."),
    max_logits: int = typer.Option(ReplacementConfig.max_logits, "--max-logits", help="Most output nodes."),
    batch_rows: int = typer.Option(ReplacementConfig.batch_rows, "--batch-rows", help="Targets per backward pass."),
    node_threshold: float = typer.Option(0.8, "--node-threshold", help="Share of node influence kept."),
    edge_threshold: float = typer.Option(0.98, "--edge-threshold", help="Share of edge influence kept."),
    top: int = typer.Option(20, "--top", help="Features listed."),
    target: list[str] = typer.Option([], "--target", help="An output token to explain, exactly one token (repeatable; "
                                                          "default: the likeliest tokens)."),
    pin: list[str] = typer.Option([], "--pin", help="Pin a feature and rerun: LAYER:POS:FEATURE=VALUE (repeatable)."),
    live_attention: bool = typer.Option(False, "--live-attention", help="With --pin: let attention patterns and "
                                                                         "norm scales respond (default: frozen)."),
    export: Path | None = ExportOpt,
    model_id: str | None = ModelIdOpt,
) -> None:
    """Which features make the model say its likeliest next tokens, through direct effects in the replacement
    model (attention and norms frozen, every MLP its transcoder plus an error)."""
    try:
        cfg = ReplacementConfig(max_logits=max_logits, max_feature_nodes=max_feature_nodes, batch_rows=batch_rows)
        for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0 <= value <= 1:
                raise AttributionError(name, f"{name} is {value}; it must be between 0 and 1")
        named = transcoder_set(transcoders)
        lm = load_model(model)
        cfg = replace(cfg, targets=tuple(one_token(lm.tokenizer, text, "target") for text in target))
        ids = prompt_ids(lm.tokenizer, prompt, "prompt", AttributionConfig.max_tokens)
        rm = ReplacementModel(lm.model, [sae for _, sae in named], torch.tensor(ids), starts_special(lm.tokenizer, ids))
        graph = build_graph(rm, cfg)
        tokens = [token_text(lm.tokenizer, i) for i in ids]
        logit_texts = [token_text(lm.tokenizer, t) for t in graph.logit_tokens]
        pins = dict(parse_pin(spec) for spec in pin)
        pinned = rm.intervene(pins, freeze_attention=not live_attention)[-1] if pins else None
        exported = None if export is None else replacement_graph_json(
            graph, graph.prune(node_threshold, edge_threshold), tokens, logit_texts, prompt,
            slug=neuronpedia_name(export.stem), scan=model_id or neuronpedia_name(lm.name),
            transcoders=[name for name, _ in named], node_threshold=node_threshold, edge_threshold=edge_threshold)
    except ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo(summary(graph, tokens, logit_texts, node_threshold, edge_threshold, top))
    if pinned is not None:
        mode = "live" if live_attention else "frozen"
        typer.echo(f"next tokens: {top_tokens(lm.tokenizer, rm.logits_TV[-1])}\n"
                   f"with {len(pins)} pinned (attention {mode}): {top_tokens(lm.tokenizer, pinned)}")
    if export is not None:
        export.write_text(json.dumps(exported))
        typer.echo(f"wrote {export}")
