"""Harvest throughput against a bare forward pass truncated at the same layer, same batches, one run.

Target (issue 2): harvesting costs at most 10% over the bare truncated forward (ratio >= 0.9).
Run: .venv/bin/python bench/harvest.py [--model smollm2] [--site layers.6.resid_post] [--contexts 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from sae_core.config import HarvestConfig
from sae_core.data import iter_contexts, iter_documents
from sae_core.harvest import batched, harvest
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model, parse_dtype
from sae_core.sites import parse_site


def bare_forward(lm, site, contexts: list[torch.Tensor], batch_size: int) -> None:
    """Only the truncated forward over the same contexts: the floor harvesting is compared with."""
    with torch.inference_mode():
        for ids in batched(contexts, batch_size):
            truncated_forward(lm.model, site, ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--site", default="layers.6.resid_post")
    parser.add_argument("--contexts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    lm = load_model(args.model, dtype=parse_dtype(args.model_dtype))
    site = parse_site(args.site)
    cfg = HarvestConfig(model=args.model, site=args.site, batch_size=args.batch_size, model_dtype=args.model_dtype,
                        tokens=10**12)
    contexts = list(islice(iter_contexts(iter_documents(cfg.dataset), lm.tokenizer, cfg.context_len), args.contexts))
    # Each harvest run writes every non-special token of exactly these contexts.
    rows = sum(int((c != lm.tokenizer.bos_token_id).sum()) for c in contexts)
    n_tokens = len(contexts) * cfg.context_len
    bare_forward(lm, site, contexts[: args.batch_size], args.batch_size)  # warm-up

    bare, harvested = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        start = time.perf_counter()
        bare_forward(lm, site, contexts, args.batch_size)
        bare.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            harvest(HarvestConfig(**{**cfg.to_dict(), "tokens": rows}), Path(tmp) / "h", lm=lm, progress=False,
                    contexts=contexts)
            harvested.append(time.perf_counter() - start)
    bare_tps = n_tokens / statistics.median(bare)
    harvest_tps = n_tokens / statistics.median(harvested)
    print(f"model={lm.name} site={site.name} contexts={len(contexts)} tokens/run={n_tokens} repeats={args.repeats}")
    print(f"bare truncated forward: {bare_tps:,.0f} tokens/s (median)")
    print(f"harvest (forward + masking + shards): {harvest_tps:,.0f} tokens/s (median)")
    print(f"ratio harvest/bare: {harvest_tps / bare_tps:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
