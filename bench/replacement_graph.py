"""Replacement-model graphs on SmolLM2 with a transcoder per layer (issue 20).

For three prompts at 16 and 64 tokens: the time to build the replacement model and its graph, nodes and
edges before and after pruning (node 0.8, edge 0.98), and the replacement and completeness scores of the
whole graph and of the pruned one. Then the transcoder set's FVUs (from each one's metrics.json) and the CE
loss with every MLP replaced by its transcoder, against the clean model and every MLP zeroed. Target: a graph
of a 64-token prompt in at most 60 s on 2 cores. Times are medians over --repeats; loading is not timed.
Also what the circuits page pays: the stored (compressed) adjacency's size, reading it back, and pruning it
again at other thresholds (a slider let go).

    python bench/replacement_graph.py --set DIR [--repeats 3] [--max-feature-nodes 256] [--ce-contexts 16]

DIR holds one transcoder per layer (`saescope train --activations <harvest of layers.0-29.mlp> --arch
transcoder`), each in its `layers.N.mlp_in` folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sae_core.attribution.replacement import ReplacementModel
from sae_core.attribution.replacement_graph import ReplacementConfig, ReplacementGraph, build_graph
from sae_core.evaluate import ce_on_corpus
from sae_core.lm import LoadedModel, load_model
from sae_core.saes import SAE, load_sae

PROMPTS = {
    "capital": ("A short quiz on European geography for the class, with the answers given after each question. "
                "Question one: which river runs through Paris? The Seine. Question "
                "two: which mountains divide Spain from France? The Pyrenees. Question three: what is the largest "
                "city of Italy? Rome. Question four: the capital of Germany is the city of"),
    "code": ("import statistics\n\n\n"
             "def total_price(items):\n    \"\"\"Sum the price of every item in the basket.\"\"\"\n    total = 0\n"
             "    for item in items:\n        total += item.price * item.quantity\n    return total\n\n\n"
             "def average_price(items):\n    if not items:\n        return 0\n    return total_price(items) /"),
    "names": ("The rain had stopped during the night, and the streets were still wet when the sun came up over "
              "the roofs. It was a quiet morning in the village. After breakfast, Mary and John walked down the hill "
              "to the "
              "market, where the baker had just opened his shop. They bought bread and a small cake. On the way "
              "home it began to rain, and John gave his umbrella to"),
}


def prompt_ids(lm: LoadedModel, text: str, n: int) -> torch.Tensor:
    """BOS and the last n - 1 tokens of the text: a prompt of exactly n tokens ending where the text does."""
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) < n - 1:
        raise SystemExit(f"a bench prompt is only {len(ids) + 1} tokens, not {n}")
    return torch.tensor([lm.tokenizer.bos_token_id, *ids[len(ids) - (n - 1):]])


def load_set(directory: Path) -> tuple[list[SAE], list[float]]:
    """The transcoders in layer order, and each one's held-out FVU from its metrics.json."""
    folders = sorted(directory.glob("layers.*.mlp_in"), key=lambda p: int(p.name.split(".")[1]))
    if not folders:
        raise SystemExit(f"{directory} holds no layers.N.mlp_in transcoders")
    fvus = [json.loads((folder / "metrics.json").read_text())["fvu"] for folder in folders]
    return [load_sae(folder) for folder in folders], fvus


def graph_figures(lm: LoadedModel, transcoders: list[SAE], ids: torch.Tensor, cfg: ReplacementConfig,
                  repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph = build_graph(ReplacementModel(lm.model, transcoders, ids, zero_bos=True), cfg)  # ids start with BOS
        times.append(time.perf_counter() - start)
    pruned = graph.prune()
    layout = graph.layout
    blob = graph.adjacency_bytes()
    start = time.perf_counter()
    stored = ReplacementGraph.from_stored(graph.to_dict(), blob)
    read_s = time.perf_counter() - start
    reprune = []
    for node, edge in ((0.5, 0.9), (0.8, 0.98), (0.95, 0.99)):
        start = time.perf_counter()
        stored.prune(node, edge)
        reprune.append(time.perf_counter() - start)
    whole, kept = graph.scores(), graph.scores(pruned)
    return {"seconds": statistics.median(times), "active": graph.active_features, "features": layout.features,
            "nodes": layout.size, "edges": int((graph.adjacency != 0).sum()), "kept_nodes": int(pruned.nodes.sum()),
            "kept_features": int(pruned.nodes[: layout.features].sum()), "kept_edges": int(pruned.edges.sum()),
            "replacement": whole.replacement, "completeness": whole.completeness,
            "pruned_replacement": kept.replacement, "pruned_completeness": kept.completeness,
            "top": lm.tokenizer.decode([graph.logit_tokens[0]]), "p_top": float(graph.logit_probabilities[0]),
            "logits": layout.logits, "stored_mb": len(blob) / 2**20, "dense_mb": graph.adjacency.numel() * 4 / 2**20,
            "read_ms": read_s * 1e3, "reprune_ms": statistics.median(reprune) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", default="16,64")
    parser.add_argument("--max-feature-nodes", type=int, default=ReplacementConfig.max_feature_nodes)
    parser.add_argument("--batch-rows", type=int, default=ReplacementConfig.batch_rows)
    parser.add_argument("--ce-contexts", type=int, default=16)
    parser.add_argument("--skip-contexts", type=int, default=1000,
                        help="corpus contexts to skip before the CE evaluation (those the harvest read)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model("smollm2")
    transcoders, fvus = load_set(args.set)
    cfg = ReplacementConfig(max_feature_nodes=args.max_feature_nodes, batch_rows=args.batch_rows)
    first = transcoders[0].cfg
    print(f"SmolLM2-135M-Instruct float32, {torch.get_num_threads()} threads; {len(transcoders)} "
          f"{first.architecture} transcoders of {first.d_sae} features (k={first.k}, skip={first.skip_connection}); "
          f"up to {cfg.max_feature_nodes} feature rows in batches of {cfg.batch_rows}; medians of {args.repeats}")
    for n in (int(x) for x in args.lengths.split(",")):
        for name, text in PROMPTS.items():
            f = graph_figures(lm, transcoders, prompt_ids(lm, text, n), cfg, args.repeats)
            print(f"  {name:8s} {n:3d} tokens: {f['seconds']:6.1f} s  top {f['top']!r} p={f['p_top']:.2f} "
                  f"({f['logits']} logits); {f['active']} active features, {f['features']} reached; "
                  f"{f['nodes']} nodes / {f['edges']} edges -> pruned {f['kept_nodes']} nodes "
                  f"({f['kept_features']} features) / {f['kept_edges']} edges; replacement {f['replacement']:.3f} "
                  f"(pruned {f['pruned_replacement']:.3f}), completeness {f['completeness']:.3f} "
                  f"(pruned {f['pruned_completeness']:.3f}); stored {f['stored_mb']:.1f} MB of {f['dense_mb']:.1f} "
                  f"dense, read back {f['read_ms']:.0f} ms, pruned again {f['reprune_ms']:.0f} ms")
    print(f"held-out FVU of the MLP outputs: median {statistics.median(fvus):.3f}, min {min(fvus):.3f}, "
          f"max {max(fvus):.3f} (layers {', '.join(f'{v:.2f}' for v in fvus)})")
    ce = ce_on_corpus(lm, transcoders, "demo", n_contexts=args.ce_contexts, skip_contexts=args.skip_contexts)
    print(f"CE over {ce['ce_tokens']:.0f} held-out tokens: clean {ce['ce_clean']:.3f}, every MLP replaced "
          f"{ce['ce_sae']:.3f}, every MLP zeroed {ce['ce_zero']:.3f}; CE loss recovered {ce['ce_loss_recovered']:.3f}")


if __name__ == "__main__":
    main()
