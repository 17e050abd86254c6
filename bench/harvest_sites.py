"""Harvesting several sites from one forward pass against harvesting each site on its own, same batches.

Issue 15: `--site a,b,c` runs the model once, stopping after the deepest site. Compared here over the same
contexts: one harvest at every site, one harvest per site (their times summed), and one at the deepest site
alone (the forward the several-site harvest cannot avoid). Medians over interleaved repeats.
Run: .venv/bin/python bench/harvest_sites.py [--sites layers.3.resid_post,layers.6.resid_post,layers.9.resid_post]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import torch

from sae_core.config import HarvestConfig
from sae_core.data import iter_contexts, iter_documents
from sae_core.harvest import harvest
from sae_core.lm import load_model, parse_dtype
from sae_core.sites import parse_sites


def timed_harvest(cfg: HarvestConfig, lm, contexts: list[torch.Tensor]) -> float:
    """Seconds for one harvest of exactly these contexts into a throw-away directory."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        harvest(cfg, Path(tmp) / "h", lm=lm, progress=False, contexts=contexts)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sites", default="layers.3.resid_post,layers.6.resid_post,layers.9.resid_post")
    parser.add_argument("--contexts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    lm = load_model(args.model, dtype=parse_dtype(args.model_dtype))
    sites = parse_sites(args.sites)
    base = HarvestConfig(model=args.model, site=args.sites, batch_size=args.batch_size, model_dtype=args.model_dtype,
                         tokens=10**12)
    contexts = list(islice(iter_contexts(iter_documents(base.dataset), lm.tokenizer, base.context_len), args.contexts))
    rows = sum(int((c != lm.tokenizer.bos_token_id).sum()) for c in contexts)  # every row of these contexts
    together_cfg = replace(base, tokens=rows)
    alone_cfgs = [replace(together_cfg, site=site.name) for site in sites]
    timed_harvest(replace(alone_cfgs[0], tokens=min(rows, 1000)), lm, contexts)  # warm-up

    together, separate, deepest = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits all three alike
        together.append(timed_harvest(together_cfg, lm, contexts))
        alone = [timed_harvest(cfg, lm, contexts) for cfg in alone_cfgs]
        separate.append(sum(alone))
        deepest.append(alone[-1])
    n_tokens = len(contexts) * base.context_len
    med = {name: statistics.median(times) for name, times in
           (("together", together), ("separate", separate), ("deepest", deepest))}
    print(f"model={lm.name} sites={','.join(s.name for s in sites)} contexts={len(contexts)} tokens/run={n_tokens} "
          f"rows/site={rows} repeats={args.repeats} threads={torch.get_num_threads()}")
    print(f"one harvest at {len(sites)} sites:      {med['together']:.2f} s (median)")
    print(f"{len(sites)} harvests, one per site:     {med['separate']:.2f} s (median of their sums)")
    print(f"one harvest at the deepest site: {med['deepest']:.2f} s (median)")
    print(f"speed-up over one per site: {med['separate'] / med['together']:.2f}x; "
          f"cost over the deepest alone: {med['together'] / med['deepest']:.2f}x")


if __name__ == "__main__":
    main()
