"""Steering on SmolLM2: generation against plain `model.generate`, the cost of measuring rows, and contrasts.

Targets: steered >= 0.9x plain tokens/s and the first token within 1 s for a 32-token prompt (issue 6);
measuring every row (feature effect, perplexity, per-token KL) adds at most 25% to a run, and a contrast of
two sets of 50 texts over an 8192-feature SAE takes at most 30 s (issue 18). Each repeat runs every variant
once, in turn, with the same prompt and seed, so the ratios compare runs taken side by side on a noisy
machine; the figures printed are medians over the repeats.

    python bench/steer.py [--sae DIR] [--tokens 64] [--repeats 5] [--part generation|measures|contrast|all]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from transformers.generation.streamers import BaseStreamer

from sae_core.contrast import contrast
from sae_core.data import demo_documents
from sae_core.generation import Limits, Sampling, collect
from sae_core.lm import load_model
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae, load_sae
from sae_core.sites import parse_site
from sae_core.steering import Intervention, Steering, stream_steered
from sae_core.steering_measures import keep_logp, measure_rows

SITE = "layers.6.resid_post"
PROMPT_TOKENS = 32
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders from the north met "
    "farmers from the valley to exchange grain, wool and salt in the market every week of the year."
)


class _Clock(BaseStreamer):
    """Timestamps of the tokens `generate` emits (its first put() is the prompt)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def timed_events(events: Iterator) -> tuple[float, float, int]:
    """(time to first token, total time, tokens) of a stream of TokenEvents, counting every row's tokens."""
    start = time.perf_counter()
    first, n = None, 0
    for _ in events:
        first = first or time.perf_counter() - start
        n += 1
    return first, time.perf_counter() - start, n


def plain(lm, ids: torch.Tensor, sampling: Sampling) -> Callable[[], tuple[float, float, int]]:
    """`model.generate` with the same sampling settings."""

    def run():
        clock = _Clock()
        torch.manual_seed(sampling.seed)
        start = time.perf_counter()
        out = lm.model.generate(ids, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=0, max_new_tokens=sampling.max_new_tokens, streamer=clock)
        return clock.times[1] - start, time.perf_counter() - start, out.shape[1] - ids.shape[1]

    return run


def ours(lm, sae, prompt_ids: list[int], runs, sampling: Sampling) -> Callable[[], tuple[float, float, int]]:
    """saescope's streaming loop with the given runs (one row each)."""
    return lambda: timed_events(stream_steered(lm, sae, prompt_ids, runs, sampling, Limits()))


def bench_sae(path: str | None, d_model: int):
    """A saved SAE, or a randomly initialised TopK one: generation speed does not depend on training."""
    if path:
        return load_sae(path), f"SAE from {path}"
    cfg = SAEConfig(architecture="topk", d_in=d_model, d_sae=8192, k=32, provenance=Provenance(site=parse_site(SITE)))
    return build_sae(cfg), "randomly initialised TopK SAE (8192 features, k=32; no trained SAE given)"


def bench_generation(lm, sae, prompt_ids: list[int], sampling: Sampling, repeats: int) -> None:
    """Issue 6's figures: tokens/s against plain generate, and time to first token."""
    steering = Steering((Intervention(10, "clamp", 8.0), Intervention(20, "add", 4.0)))
    variants = {
        "plain generate": plain(lm, torch.tensor([prompt_ids]), sampling),
        "ours, unsteered": ours(lm, sae, prompt_ids, [None], sampling),
        "ours, steered": ours(lm, sae, prompt_ids, [steering], sampling),
        "ours, baseline+steered (2 rows, both counted)": ours(lm, sae, prompt_ids, [None, steering], sampling),
    }
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    for run in variants.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in variants.items():
            results[name].append(run())
    rate = {name: statistics.median(n / total for _, total, n in runs) for name, runs in results.items()}
    for name, runs in results.items():
        ttft = statistics.median(first for first, _, _ in runs)
        tokens = statistics.median(n for _, _, n in runs)
        print(f"  {name:34s} {rate[name]:7.1f} tokens/s  first token {ttft * 1000:6.0f} ms  ({tokens:.0f} tokens)")
    ratio = statistics.median(
        (s[2] / s[1]) / (p[2] / p[1]) for s, p in zip(results["ours, steered"], results["plain generate"])
    )
    print(f"steered / plain generate: {ratio:.2f}x (target >= 0.9x)")
    ttft = statistics.median(first for first, _, _ in results["ours, steered"])
    print(f"steered first token for a {PROMPT_TOKENS}-token prompt: {ttft:.3f} s (target <= 1 s)")


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_measures(lm, sae, prompt_ids: list[int], sampling: Sampling, repeats: int) -> None:
    """A run's generation time beside the time its rows' measures take, for a steered pair, the same with
    controls, and a four-strength sweep."""
    steering = Steering((Intervention(10, "clamp", 8.0), Intervention(20, "add", 4.0)))
    runs = {
        "baseline + steered (2 rows)": [None, steering],
        "with controls (4 rows)": [None, steering, steering.as_control("random"), steering.as_control("flipped")],
        "sweep of 4 strengths (5 rows)": [None, *(steering.at_strength(s) for s in (1.0, 2.0, 4.0, 8.0))],
    }

    def generate(rows):
        """As the playground generates: keeping the distributions its measures read, where they fit."""
        kept = keep_logp(lm, len(rows), sampling)
        return collect(stream_steered(lm, sae, prompt_ids, rows, sampling, keep_logp=kept), len(rows))

    for rows in runs.values():  # warm-up
        measure_rows(lm, sae, prompt_ids, rows, generate(rows))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, rows in runs.items():
            generate_s, generations = timed(lambda rows=rows: generate(rows))
            measure_s, _ = timed(lambda rows=rows, g=generations: measure_rows(lm, sae, prompt_ids, rows, g))
            times[name].append((generate_s, measure_s))
    for name, pairs in times.items():
        generate_s = statistics.median(g for g, _ in pairs)
        measure_s = statistics.median(m for _, m in pairs)
        share = statistics.median(m / g for g, m in pairs)
        print(f"  {name:30s} generation {generate_s:6.2f} s  measures {measure_s:5.2f} s  "
              f"measures / generation {share:5.1%} (target <= 25%)")


def contrast_sets(n: int) -> tuple[list[str], list[str]]:
    """n prose and n code texts of the demo corpus (it interleaves the two), each cut to 600 characters."""
    docs = [d[:600] for d, _ in zip(demo_documents(), range(2 * n))]
    return docs[0::2], docs[1::2]


def bench_contrast(lm, sae, repeats: int, n: int = 50) -> None:
    a, b = contrast_sets(n)
    contrast(lm, sae, a[:2], b[:2])  # warm-up
    seconds = []
    for _ in range(repeats):
        elapsed, result = timed(lambda: contrast(lm, sae, a, b))
        seconds.append(elapsed)
    tokens = result.a.tokens + result.b.tokens
    print(f"  contrast of {len(a)} + {len(b)} texts ({tokens} tokens), {sae.W_dec.shape[0]} features: "
          f"{statistics.median(seconds):.2f} s median (min {min(seconds):.2f}, max {max(seconds):.2f}; target <= 30 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", help="SAE directory at a SmolLM2 site (default: random TopK at layers.6)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=["generation", "measures", "contrast", "all"], default="all")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    lm = load_model("smollm2")
    sae, sae_note = bench_sae(args.sae, lm.model.config.hidden_size)
    prompt_ids = [lm.tokenizer.bos_token_id, *lm.tokenizer(TEXT).input_ids][:PROMPT_TOKENS]
    assert len(prompt_ids) == PROMPT_TOKENS, "the bench text is too short for the prompt length"
    sampling = Sampling(max_new_tokens=args.tokens, temperature=1.0, top_p=0.9, seed=0)
    print(f"SmolLM2-135M-Instruct float32, {torch.get_num_threads()} threads; {sae_note} at {SITE}")
    print(f"prompt {PROMPT_TOKENS} tokens, up to {args.tokens} new tokens, temperature 1, top-p 0.9, seed 0; "
          f"medians of {args.repeats} runs")
    if args.part in ("generation", "all"):
        bench_generation(lm, sae, prompt_ids, sampling, args.repeats)
    if args.part in ("measures", "all"):
        bench_measures(lm, sae, prompt_ids, sampling, args.repeats)
    if args.part in ("contrast", "all"):
        bench_contrast(lm, sae, args.repeats)


if __name__ == "__main__":
    main()
