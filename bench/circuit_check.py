"""Does ablating a behaviour's top three attributed features change what SmolLM2 says?

Issue 15 asks this of three behaviours of the demo's SAEs. For each prompt: attribution by patching (BOS held),
the three feature nodes of largest estimated |effect|, then the metric and a greedy continuation with and
without those three features ablated. The ablation is the steering playground's own (`sae_core.steering.steer`
with `ablate` at every position), one splice per SAE, so features at different sites are ablated together,
which one playground run (one SAE) cannot do. Three random features that are active in the prompt at the same
sites are ablated the same way as a control.

    python bench/circuit_check.py --sae DIR,DIR,DIR [--tokens 12]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from contextlib import ExitStack

import torch

from sae_core.attribution import AttributionConfig, AttributionRequest, attribute, dictionaries
from sae_core.attribution.dictionaries import Dictionary
from sae_core.attribution.graph import AttributionGraph
from sae_core.hooks import truncated_forward
from sae_core.lm import LoadedModel, load_model
from sae_core.saes import load_sae
from sae_core.steering import Intervention, Steering, steer

BEHAVIOURS = (
    ("repeated name (IOI)", "When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("fact", "The capital of France is", " Paris", None),
    ("closing bracket", "values = sorted(set(items), key=len", ")", None),
)
Ablation = dict[int, list[int]]
"""Site index -> features ablated there."""


def top_features(graph: AttributionGraph, n: int) -> Ablation:
    """The n distinct (site, feature) pairs of largest estimated |effect|."""
    chosen: Ablation = {}
    for node in sorted((x for x in graph.nodes if x.kind == "feature"), key=lambda x: -abs(x.effect)):
        if node.feature not in chosen.setdefault(node.layer, []):
            chosen[node.layer].append(node.feature)  # type: ignore[arg-type]
        if sum(map(len, chosen.values())) == n:
            break
    return {site: feats for site, feats in chosen.items() if feats}


def random_active(lm: LoadedModel, dicts: Sequence[Dictionary], ids: torch.Tensor, like: Ablation,
                  seed: int) -> Ablation:
    """As many features as `like` holds per site, drawn from those active in the prompt and not in `like`."""
    rng = random.Random(seed)
    out: Ablation = {}
    for site, feats in like.items():
        x_TD = truncated_forward(lm.model, dicts[site].site, ids[None])[0].float()
        active = (dicts[site].sae.encode(x_TD[1:]) > 0).any(0).nonzero()[:, 0].tolist()  # BOS aside
        out[site] = rng.sample(sorted(set(active) - set(feats)), len(feats))
    return out


def ablated(lm: LoadedModel, dicts: Sequence[Dictionary], ablation: Ablation, prompt_len: int) -> ExitStack:
    """The playground's ablation of each site's features, every forward, all positions."""
    stack = ExitStack()
    for site, feats in ablation.items():
        run = Steering(tuple(Intervention(f, "ablate") for f in feats))
        stack.enter_context(steer(lm.model, dicts[site].sae, [run], prompt_len))
    return stack


@torch.no_grad()
def measure(lm: LoadedModel, dicts: Sequence[Dictionary], ids: torch.Tensor, target: int, contrast: int | None,
            ablation: Ablation, tokens: int) -> tuple[float, str]:
    """(the metric at the prompt's last position, the greedy continuation), under the ablation."""
    with ablated(lm, dicts, ablation, len(ids)):
        logits = lm.model(ids[None]).logits[0, -1].float()
        metric = float(logits[target] - logits[contrast]) if contrast is not None \
            else float(logits.log_softmax(-1)[target])
        seq = ids
        for _ in range(tokens):  # whole-sequence forwards: the splice sees every position each time
            nxt = lm.model(seq[None]).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt[None]])
    return metric, str(lm.tokenizer.decode(seq[len(ids):]))


def named(graph: AttributionGraph, ablation: Ablation) -> str:
    return ", ".join(f"{graph.sites[s].split('.')[1]}#{f}" for s, feats in ablation.items() for f in feats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True, help="SAE directories, comma-separated (one per site)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=12, help="greedy tokens generated per run")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    lm = load_model(args.model)
    dicts = dictionaries(lm.model, lm.name, [(p, load_sae(p).requires_grad_(False)) for p in args.sae.split(",")])
    for name, prompt, target, contrast in BEHAVIOURS:
        graph = attribute(lm, dicts, AttributionRequest(prompt, target, contrast), AttributionConfig())
        ids = torch.tensor(graph.token_ids)
        top = top_features(graph, args.top)
        estimate = sum(x.effect for x in graph.nodes if x.kind == "feature" and x.feature in top.get(x.layer, ()))
        print(f"\n## {name}: {prompt!r} -> {target!r}" + (f" vs {contrast!r}" if contrast else ""))
        print(f"metric {graph.metric}; top {args.top} features {named(graph, top)}; summed estimate {estimate:+.3f}")
        clean = measure(lm, dicts, ids, graph.target_id, _id(lm, contrast), {}, args.tokens)
        for label, ablation in (("clean", {}), ("top ablated", top),
                                ("random active ablated", random_active(lm, dicts, ids, top, seed=0))):
            metric, text = clean if not ablation else measure(lm, dicts, ids, graph.target_id, _id(lm, contrast),
                                                              ablation, args.tokens)
            change = "" if not ablation else f" (change {metric - clean[0]:+.3f}; " \
                f"text {'same' if text == clean[1] else 'CHANGED'}) [{named(graph, ablation)}]"
            print(f"  {label:22s} metric {metric:+.3f}{change}\n  {'':22s} {text!r}")


def _id(lm: LoadedModel, token: str | None) -> int | None:
    return None if token is None else lm.tokenizer(token, add_special_tokens=False).input_ids[0]


if __name__ == "__main__":
    main()
