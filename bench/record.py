"""Recording-pass time against the bare truncated forward over the same contexts, same batches, one run.

Target (issue 4): the streaming recording pass (forward + SAE encode + statistics + top-k and quantile
merging) takes at most 1.3x the bare truncated forward. The per-SAE steps that do not depend on the
number of tokens (logit effects, nearest neighbours) are timed once and printed separately. Bare and
recording run with the allocator setting the CLI uses (`sae_core.allocator`); a third arm records with
glibc's defaults, to show what that setting is worth; a fourth records without co-activation counting
(RecordConfig.n_coactive=0), to show what the "fires together with" lists cost (issue 16: at most 10%). Last,
co-activation counting alone over the pass's firing entries, counted in torch on --device (what the recorder
does) and by the same steps in NumPy on the host (the reference), with a check that both keep the same partners
and scores.
The default size, 1024 contexts of 128 tokens (131k tokens, about the demo's recording), is a real
recording's regime: the first batches fill the empty top-k and quantile banks, where a large share of firing
tokens become candidates, so a short run measures mostly that warm-up (at 384 contexts the overhead per token is
about twice that at 1024).
Run: .venv/bin/python bench/record.py --sae runs/demo/sae-* [--contexts 1024] [--repeats 5] [--device cuda]
(without --sae: a random SAE, --architecture topk --d-sae 4096). On CUDA every timed arm ends with a synchronize,
so the times are the GPU's work, not its queueing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from itertools import islice

import torch

from sae_core.allocator import keep_freed_memory
from sae_core.data import iter_contexts, iter_documents, special_ids
from sae_core.devices import resolve_device
from sae_core.harvest import batched
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model
from sae_core.records import RecordConfig, contexts_per_batch, record_activations
from sae_core.records.coactivation import Arrays, CoactivationCounter, NumpyArrays, TorchArrays
from sae_core.records.directions import TopTable, logit_effects
from sae_core.records.neighbours import nearest_features
from sae_core.records.recording import encode_firing
from sae_core.saes import SAEConfig, build_sae, load_sae
from sae_core.sites import parse_site


def bare_forward(model, site, contexts: list[torch.Tensor], batch_size: int) -> None:
    """Only the truncated forward over the same contexts: the floor recording is compared with."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids in batched(contexts, batch_size):
            truncated_forward(model, site, ids.to(device))


def firing_entries(model, sae, site, contexts: list[torch.Tensor], batch_size: int, skip_ids: list[int]):
    """Each batch's recorded (row, feature) firing entries, on the SAE's device, as the recording pass counts them."""
    device = sae.W_dec.device
    skip = torch.tensor(skip_ids, device=device)
    batches = []
    with torch.no_grad():
        for ids in batched(contexts, batch_size):
            ids = ids.to(device)
            x_BTD = truncated_forward(model, site, ids)
            firing = encode_firing(sae, x_BTD.reshape(-1, x_BTD.shape[-1]))
            recorded = ~torch.isin(ids, skip).reshape(-1)[firing.row_C]
            batches.append((firing.row_C[recorded], firing.feat_C[recorded]))
    return batches


def counting(arrays: Arrays, batches, count_F: torch.Tensor, k: int) -> tuple[float, TopTable]:
    """Seconds to count every batch's pairs with `arrays` and rank each feature's partners, and the table."""
    counter = CoactivationCounter(count_F.numel(), arrays)
    tables = []

    def count() -> None:
        for row_C, feat_C in batches:
            counter.add(row_C, feat_C)
        tables.append(counter.top(count_F, k))

    return timed(count), tables[0]


def compare_counting(model, sae, site, contexts: list[torch.Tensor], batch_size: int, skip_ids: list[int], k: int,
                     repeats: int) -> None:
    """Co-activation counting alone, NumPy on the host against torch on the SAE's device: times, and the tables compared."""
    device = sae.W_dec.device
    batches = firing_entries(model, sae, site, contexts, batch_size, skip_ids)
    count_F = torch.bincount(torch.cat([feat_C for _, feat_C in batches]), minlength=sae.W_dec.shape[0])
    arms: dict[str, Arrays] = {"numpy on the host": NumpyArrays(), f"torch on {device}": TorchArrays(device)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    tables: dict[str, TopTable] = {}
    for _ in range(repeats):
        for name, arrays in arms.items():
            seconds, tables[name] = counting(arrays, batches, count_F, k)
            times[name].append(seconds)
    print(f"co-activation counting alone ({sum(len(r) for r, _ in batches)} firing entries in {len(batches)} batches): "
          + ", ".join(f"{name} median {statistics.median(t):.2f} s runs {[round(x, 2) for x in t]}"
                      for name, t in times.items()))
    first, second = tables.values()
    same = torch.equal(first.index_FK, second.index_FK) and torch.equal(first.value_FK, second.value_FK)
    print(f"numpy and torch counting keep the same partners and scores: {same}")


def timed(fn) -> float:
    """Wall time of fn, waiting for any CUDA work it queued."""
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--site", default="layers.6.resid_post")
    parser.add_argument("--sae", default=None, help="A trained SAE directory; default: a random one")
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--contexts", type=int, default=1024)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=None, help="contexts per batch (default: as record sizes it)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = resolve_device(args.device)
    lm = load_model(args.model, device=str(device))
    site = parse_site(args.site)
    d_model = lm.model.get_input_embeddings().weight.shape[1]
    sae = load_sae(args.sae) if args.sae else build_sae(
        SAEConfig(architecture=args.architecture, d_in=d_model, d_sae=args.d_sae, k=args.k), seed=0)
    sae.to(device)
    contexts = list(islice(iter_contexts(iter_documents("demo"), lm.tokenizer, args.context_len), args.contexts))
    cfg = RecordConfig(batch_size=args.batch_size)
    args.batch_size = contexts_per_batch(cfg, args.context_len, sae.W_dec.shape[0])
    specials = special_ids(lm.tokenizer).tolist()
    bare_forward(lm.model, site, contexts[: args.batch_size], args.batch_size)  # warm-up

    def record(config: RecordConfig = cfg) -> None:
        record_activations(lm.model, sae, contexts, site=site, cfg=config, skip_ids=specials)

    bare, recorded, recorded_glibc, without_coactive = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
        keep_freed_memory(True)  # as the CLI runs
        bare.append(timed(lambda: bare_forward(lm.model, site, contexts, args.batch_size)))
        recorded.append(timed(record))
        without_coactive.append(timed(lambda: record(replace(cfg, n_coactive=0))))
        keep_freed_memory(False)
        recorded_glibc.append(timed(record))
    keep_freed_memory(True)
    paired_coactive = [r / w for r, w in zip(recorded, without_coactive)]
    W_dec = sae.W_dec.detach()
    per_sae = timed(lambda: (logit_effects(lm.model, W_dec, cfg.n_logits), nearest_features(W_dec, cfg.n_neighbours)))
    n_tokens = len(contexts) * args.context_len
    print(f"model={lm.name} site={site.name} sae={args.sae or f'random {args.architecture}'} "
          f"d_sae={sae.W_dec.shape[0]} contexts={len(contexts)} tokens/run={n_tokens} repeats={args.repeats} "
          f"batch={args.batch_size} threads={torch.get_num_threads()} device={device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"bare truncated forward: median {statistics.median(bare):.2f} s  runs {[round(t, 2) for t in bare]}")
    print(f"recording pass:         median {statistics.median(recorded):.2f} s  runs {[round(t, 2) for t in recorded]}")
    paired = [r / b for r, b in zip(recorded, bare)]
    print(f"ratio record/bare: {statistics.median(recorded) / statistics.median(bare):.3f} of the medians, "
          f"{statistics.median(paired):.3f} median of each repeat's pair {[round(p, 3) for p in paired]} (target <= 1.3)")
    print(f"recording with glibc's default malloc: median {statistics.median(recorded_glibc):.2f} s  "
          f"runs {[round(t, 2) for t in recorded_glibc]}  "
          f"(x{statistics.median(recorded_glibc) / statistics.median(recorded):.2f} the tuned allocator)")
    print(f"recording without co-activation: median {statistics.median(without_coactive):.2f} s  "
          f"runs {[round(t, 2) for t in without_coactive]}")
    print(f"co-activation's share: with/without {statistics.median(recorded) / statistics.median(without_coactive):.3f} "
          f"of the medians, {statistics.median(paired_coactive):.3f} median of each repeat's pair "
          f"{[round(p, 3) for p in paired_coactive]} (target <= 1.10)")
    print(f"per-SAE logit effects + neighbours (once, independent of tokens): {per_sae:.2f} s")

    compare_counting(lm.model, sae, site, contexts, args.batch_size, specials, cfg.n_coactive, args.repeats)

if __name__ == "__main__":
    main()
