"""Attribution on SmolLM2 with three 8192-feature SAEs and a 64-token prompt.

Targets (issue 15): node effects by attribution patching <= 5 s on 2 cores; the whole run (effects, exact
verification of the top 20, pruned graph with edges) <= 60 s. Model and SAE loading are not timed. Without
--sae the SAEs are freshly initialised TopK (k=32) SAEs at layers 3, 6 and 9: as many active features per
token as trained ones, so the timing holds, though the effects mean nothing. The figures are medians.

    python bench/attribution.py [--sae DIR,DIR,DIR] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_core.attribution import AttributionConfig, AttributionRequest, attribute, dictionaries
from sae_core.attribution.effects import patching
from sae_core.attribution.inputs import prepare
from sae_core.attribution.nodes import build_nodes
from sae_core.lm import LoadedModel, load_model
from sae_core.provenance import Provenance
from sae_core.saes import SAE, SAEConfig, build_sae, load_sae
from sae_core.sites import parse_site

SITES = ("layers.3.resid_post", "layers.6.resid_post", "layers.9.resid_post")
PROMPT_TOKENS = 64
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders from the north met "
    "farmers from the valley to exchange grain, wool and salt in the market every week of the year. Over the "
    "centuries the market grew into a town, the town into a city, and the city into the capital of"
)
EFFECTS_TARGET_S, RUN_TARGET_S = 5.0, 60.0


def fresh_saes(lm: LoadedModel) -> list[tuple[str, SAE]]:
    out = []
    for seed, site in enumerate(SITES):
        cfg = SAEConfig(architecture="topk", d_in=576, d_sae=8192, k=32,
                        provenance=Provenance(model=lm.name, site=parse_site(site)))
        out.append((f"fresh-{site}", build_sae(cfg, seed).requires_grad_(False)))
    return out


def prompt_of_length(lm: LoadedModel, n: int) -> str:
    """The bench text cut so that it is n tokens with BOS."""
    ids = lm.tokenizer(TEXT, add_special_tokens=False).input_ids[: n - 1]
    if len(ids) < n - 1:
        raise SystemExit(f"the bench text is only {len(ids) + 1} tokens")
    return str(lm.tokenizer.decode(ids))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", default=None, help="Three SAE directories, comma-separated (default: fresh TopK).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("smollm2")
    saes = [(p, load_sae(p)) for p in args.sae.split(",")] if args.sae else fresh_saes(lm)
    dicts = dictionaries(lm.model, lm.name, saes)
    prompt = prompt_of_length(lm, PROMPT_TOKENS)
    request = AttributionRequest(prompt, " the")
    cfg = AttributionConfig()
    inputs = prepare(lm.tokenizer, request, cfg)
    print(f"SmolLM2, {len(dicts)} SAEs ({', '.join(d.site.name for d in dicts)}), "
          f"{dicts[0].sae.cfg.d_sae} features, {len(inputs.ids_T)}-token prompt, {args.threads} threads")

    def effects() -> None:
        clean, grads, _ = patching(lm.model, dicts, inputs)
        build_nodes(clean, clean.zeros(), grads, inputs.metric.position)

    effects()  # warm-up: first-call allocations
    effect_s = [timed(effects) for _ in range(args.repeats)]
    graphs = []
    run_s = [timed(lambda: graphs.append(attribute(lm, dicts, request, cfg))) for _ in range(args.repeats)]
    graph = graphs[-1]
    nodes, links = graph.pruned()
    e, r = statistics.median(effect_s), statistics.median(run_s)
    print(f"node effects (attribution patching): median {e:.2f} s  target {EFFECTS_TARGET_S:.0f} s  "
          f"ratio {e / EFFECTS_TARGET_S:.2f}  runs {', '.join(f'{x:.2f}' for x in effect_s)}")
    print(f"full run (effects + verify top {cfg.verify_top} + edges of {cfg.max_nodes} nodes): median {r:.2f} s  "
          f"target {RUN_TARGET_S:.0f} s  ratio {r / RUN_TARGET_S:.2f}  runs {', '.join(f'{x:.2f}' for x in run_s)}")
    print(f"graph: {graph.active_nodes} nodes considered, pruned to {len(nodes)} nodes and {len(links)} edges; "
          f"Spearman estimate vs exact (top {cfg.verify_top}): {graph.spearman:.3f}")


if __name__ == "__main__":
    main()
