"""The recording pass: what every feature of an SAE responds to, as plain records (no database).

One streaming pass of the model (stopped at the SAE's site) plus the SAE. Memory is bounded by
features x examples, never by the number of tokens: per-feature sums, maxima and histograms, and two
`GroupBank`s of windows (top activations; quantile-interval samples).

Quantile intervals. Interval i of a feature holds its non-zero activations in [i/n, (i+1)/n) x max
(the last interval closed), where max is the feature's max over the whole pass. The max is unknown until
the pass ends, so intervals are kept relative to the running max: every non-zero activation draws a
uniform random key and each interval keeps the `per_interval` entries with the smallest keys (a bottom-k
reservoir, a uniform sample without replacement). When a feature's running max grows, its kept samples
are re-bucketed against the new max. Samples therefore always lie in their final intervals. The sample
is exactly uniform over the tokens seen after the feature's last max increase; earlier tokens are
represented by the survivors of their old intervals, which is uniform within each old interval. The
alternative, a second pass once the maxima are known, would double the model compute.
"""

from __future__ import annotations

from itertools import chain, islice
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from .data import special_ids
from .directions import TopTable, logit_effects, nearest_features
from .firing import Firing
from .harvest import batched
from .hooks import truncated_forward
from .distributed import Dist
from .record_merge import merge_recorders
from .saes.topk import TopKSAE
from .selection import Entries, GroupBank, interval_of, rank_in_group
from .sites import Site

HIST_EDGES = torch.logspace(-5, 5, 121)
"""Shared log-spaced grid (12 bins a decade) for activation histograms; each feature keeps its occupied span."""

FLOAT16_MAX = 65504.0


class SparseCoder(Protocol):
    """What recording needs of an SAE."""

    W_dec: torch.Tensor

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class RecordConfig:
    """How much to keep per feature during a recording pass."""

    n_top: int = 20
    """Top-activating windows kept per feature."""
    before: int = 24
    """Tokens shown before the peak token of a window."""
    after: int = 8
    """Tokens shown after the peak token of a window."""
    n_intervals: int = 10
    """Activation-quantile intervals per feature, equal-width fractions of its max."""
    per_interval: int = 5
    """Windows sampled per interval."""
    n_logits: int = 10
    """Tokens listed as most promoted and most suppressed."""
    n_neighbours: int = 10
    """Nearest features by decoder cosine similarity."""
    batch_size: int | None = None
    """Contexts per forward pass; None sizes batches by ACTIVATION_BUDGET (see `contexts_per_batch`)."""
    dense_density: float = 0.1
    """Density above which a feature counts as dense."""
    seed: int = 0
    """Seed for the quantile samples' random keys."""


@dataclass(frozen=True)
class ExampleTable:
    """Every kept window of every feature, one row each; interval -1 marks a top example."""

    feature_E: torch.Tensor
    interval_E: torch.Tensor
    rank_E: torch.Tensor
    """Order within (feature, interval), by descending activation."""
    context_E: torch.Tensor
    """Global number of the context in the stream."""
    start_E: torch.Tensor
    """Position in the context of the window's first token."""
    peak_E: torch.Tensor
    """Offset in the window of the token the example was chosen for."""
    value_E: torch.Tensor
    """The feature's activation on that token (float32, exact)."""
    tokens_EW: torch.Tensor
    acts_EW: torch.Tensor
    """The feature's activation on every window token (float16)."""


@dataclass(frozen=True)
class Example:
    """One window for one feature, as plain values."""

    context: int
    start: int
    peak: int
    value: float
    token_ids: list[int]
    acts: list[float]
    interval: int | None


@dataclass(frozen=True)
class FeatureRecord:
    """Everything recorded about one feature, as plain values."""

    index: int
    density: float
    max_act: float
    mean_act: float
    hist_edges: list[float]
    hist_counts: list[int]
    top: list[Example]
    quantiles: list[Example]
    promoted: list[tuple[int, float]]
    suppressed: list[tuple[int, float]]
    neighbours: list[tuple[int, float]]


@dataclass(frozen=True)
class SAERecord:
    """A recording pass's result for a whole SAE; per-feature values are column tensors of length F."""

    n_tokens: int
    n_contexts: int
    config: RecordConfig
    count_F: torch.Tensor
    max_F: torch.Tensor
    mean_F: torch.Tensor
    """Mean activation over the tokens where the feature fires."""
    hist_FB: torch.Tensor
    """Counts of non-zero activations on the HIST_EDGES grid."""
    examples: ExampleTable
    promoted: TopTable
    suppressed: TopTable
    neighbours: TopTable
    token_text: dict[int, str]
    """Text piece of every token id that appears in examples or logit tables."""

    @property
    def d_sae(self) -> int:
        return self.count_F.numel()

    @property
    def density_F(self) -> torch.Tensor:
        return self.count_F.double() / max(self.n_tokens, 1)

    @property
    def dead_count(self) -> int:
        return int((self.count_F == 0).sum())

    @property
    def dense_count(self) -> int:
        return int((self.density_F > self.config.dense_density).sum())

    def density_histogram(self, bins: int = 40) -> tuple[list[float], list[int]]:
        """Histogram of log10 density over the features that fire at least once."""
        alive = self.density_F[self.count_F > 0].log10()
        if alive.numel() == 0:
            return [], []
        low, high = float(alive.min()), float(alive.max())
        high = high if high > low else low + 1.0
        counts = torch.histc(alive.float(), bins=bins, min=low, max=high)
        return torch.linspace(low, high, bins + 1).tolist(), counts.long().tolist()

    def feature_hist(self, index: int) -> tuple[list[float], list[int]]:
        """One feature's histogram trimmed to its occupied bins (edges has one more entry than counts)."""
        counts = self.hist_FB[index]
        occupied = counts.nonzero().flatten()
        if occupied.numel() == 0:
            return [], []
        lo, hi = int(occupied[0]), int(occupied[-1]) + 1
        return HIST_EDGES[lo : hi + 1].tolist(), counts[lo:hi].tolist()

    def feature(self, index: int) -> FeatureRecord:
        """One feature as plain values, for export and inspection."""
        ex = self.examples
        rows = (ex.feature_E == index).nonzero().flatten().tolist()
        examples = [_example(ex, r) for r in rows]
        edges, counts = self.feature_hist(index)
        return FeatureRecord(
            index=index,
            density=float(self.density_F[index]),
            max_act=float(self.max_F[index]),
            mean_act=float(self.mean_F[index]),
            hist_edges=edges,
            hist_counts=counts,
            top=[e for e in examples if e.interval is None],
            quantiles=[e for e in examples if e.interval is not None],
            promoted=_pairs(self.promoted, index),
            suppressed=_pairs(self.suppressed, index),
            neighbours=_pairs(self.neighbours, index),
        )


def _example(ex: ExampleTable, row: int) -> Example:
    """Row `row` of an example table as plain values."""
    interval = int(ex.interval_E[row])
    return Example(
        context=int(ex.context_E[row]),
        start=int(ex.start_E[row]),
        peak=int(ex.peak_E[row]),
        value=float(ex.value_E[row]),
        token_ids=ex.tokens_EW[row].tolist(),
        acts=ex.acts_EW[row].float().tolist(),
        interval=None if interval < 0 else interval,
    )


def _pairs(table: TopTable, index: int) -> list[tuple[int, float]]:
    """A table row as (index, value) pairs."""
    return list(zip(table.index_FK[index].tolist(), table.value_FK[index].tolist()))


class Recorder:
    """Accumulates per-feature statistics and example windows over batches of contexts."""

    def __init__(self, d_sae: int, cfg: RecordConfig, device: torch.device | str = "cpu", rank: int = 0):
        self.cfg = cfg
        self.d_sae = d_sae
        self.n_tokens = 0
        self.n_contexts = 0
        self.count_F = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.total_F = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.max_F = torch.zeros(d_sae, device=device)
        self.edges = HIST_EDGES[1:-1].to(device)
        self.hist_FB = torch.zeros(d_sae, HIST_EDGES.numel() - 1, dtype=torch.long, device=device)
        self.top = GroupBank(d_sae, cfg.n_top, self._empty(device))
        self.quantile = GroupBank(d_sae * cfg.n_intervals, cfg.per_interval, self._empty(device))
        # Each rank of a distributed pass draws its own keys; rank 0 (and a single process) from the seed itself.
        seed = int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0]) if rank else cfg.seed
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def _empty(self, device: torch.device | str) -> Entries:
        """An empty entry set with the window payloads."""
        width = self.cfg.before + self.cfg.after + 1
        none = torch.zeros(0, dtype=torch.long, device=device)
        return Entries(
            none,
            torch.zeros(0, device=device),
            {
                "context": none,
                "start": none,
                "peak": none,
                "value": torch.zeros(0, device=device),
                "tokens": torch.zeros(0, width, dtype=torch.int32, device=device),
                "acts": torch.zeros(0, width, dtype=torch.float16, device=device),
            },
        )

    def add(self, tokens_BT: torch.Tensor, firing: Firing, valid_BT: torch.Tensor) -> None:
        """Fold in one batch (`firing` over its B*T tokens, row-major); tokens where `valid_BT` is False are ignored."""
        B, T = tokens_BT.shape
        valid_N = valid_BT.reshape(-1)
        firing = firing.take(valid_N[firing.row_C])
        feat_C, value_C = firing.feat_C, firing.value_C
        # Statistics from the firing entries alone: column sums over the dense [N, F] matrix cost 40% of
        # the whole merge on the demo SAE (activations are >= 0, so nothing else contributes).
        self.count_F += torch.bincount(feat_C, minlength=self.d_sae)
        self.total_F.index_add_(0, feat_C, value_C.double())
        old_max_F = self.max_F
        self.max_F = old_max_F.scatter_reduce(0, feat_C, value_C, "amax")
        self._add_hist(feat_C, value_C)

        def windows(mask: torch.Tensor) -> dict[str, torch.Tensor]:
            return self._windows(tokens_BT, firing, valid_N, mask)

        self.top.merge(feat_C, value_C, windows)
        self._sample_quantiles(feat_C, value_C, windows, grew=(self.max_F > old_max_F).any())
        self.n_tokens += int(valid_BT.sum())
        self.n_contexts += B

    def _add_hist(self, feat_C: torch.Tensor, value_C: torch.Tensor) -> None:
        """Count non-zero activations into the shared log-spaced grid."""
        n_bins = self.hist_FB.shape[1]
        bin_C = torch.bucketize(value_C, self.edges)
        self.hist_FB.view(-1).add_(torch.bincount(feat_C * n_bins + bin_C, minlength=self.hist_FB.numel()))

    def _sample_quantiles(self, feat_C, value_C, windows, grew: bool) -> None:
        """Re-bucket kept samples if maxima grew, then offer this batch's activations with random keys."""
        n = self.cfg.n_intervals
        touched_G = None
        if grew:
            kept = self.quantile.entries
            feat_M = kept.group_M // n
            touched_G = self.quantile.regroup(feat_M * n + interval_of(kept.payload["value"], self.max_F[feat_M], n))
        group_C = feat_C * n + interval_of(value_C, self.max_F[feat_C], n)
        key_C = torch.rand(value_C.shape, generator=self.generator, device=value_C.device)
        self.quantile.merge(group_C, -key_C, windows, touched_G)

    def _windows(self, tokens_BT, firing: Firing, valid_N, mask) -> dict[str, torch.Tensor]:
        """The context window around each candidate in `mask`, with the candidate feature's activations.

        Ignored tokens in a window (BOS above all) show an activation of zero.
        """
        T = tokens_BT.shape[1]
        width = self.cfg.before + self.cfg.after + 1
        if width > T:
            raise ValueError(f"context length {T} is shorter than the example window ({width} tokens)")
        row_C, feat_C, value_C = firing.row_C[mask], firing.feat_C[mask], firing.value_C[mask]
        b_C, t_C = row_C // T, row_C % T
        start_C = (t_C - self.cfg.before).clamp(0, T - width)
        pos_CW = start_C[:, None] + torch.arange(width, device=row_C.device)
        rows_CW = (b_C * T)[:, None] + pos_CW
        acts_CW = firing.at(rows_CW, feat_C[:, None].expand_as(rows_CW)) * valid_N[rows_CW]
        return {
            "context": b_C + self.n_contexts,
            "start": start_C,
            "peak": t_C - start_C,
            "value": value_C,
            "tokens": tokens_BT[b_C[:, None], pos_CW].to(torch.int32),
            "acts": acts_CW.clamp(max=FLOAT16_MAX).to(torch.float16),
        }

    def examples(self) -> ExampleTable:
        """Both banks as one table sorted by feature, interval (top first) and descending activation."""
        n = self.cfg.n_intervals
        top, quant = self.top.entries, self.quantile.entries
        feature_E = torch.cat([top.group_M, quant.group_M // n])
        interval_E = torch.cat([torch.full_like(top.group_M, -1), quant.group_M % n])
        value_E = torch.cat([top.payload["value"], quant.payload["value"]])
        group_E = feature_E * (n + 1) + interval_E + 1
        order, rank = rank_in_group(group_E, value_E)
        payload = {k: torch.cat([top.payload[k], quant.payload[k]])[order].cpu() for k in top.payload}
        return ExampleTable(
            feature_E=feature_E[order].cpu(),
            interval_E=interval_E[order].cpu(),
            rank_E=rank.cpu(),
            context_E=payload["context"],
            start_E=payload["start"],
            peak_E=payload["peak"],
            value_E=payload["value"],
            tokens_EW=payload["tokens"],
            acts_EW=payload["acts"],
        )


def encode_firing(sae: SparseCoder, x_ND: torch.Tensor) -> Firing:
    """The SAE's firing entries on `x_ND`, straight from its selection when it is a TopK SAE."""
    x_ND = x_ND.to(sae.W_dec.dtype)
    if isinstance(sae, TopKSAE):
        pre_NF = sae.pre_acts(x_ND)
        return Firing.from_topk(pre_NF, sae.select(pre_NF))
    return Firing.from_dense(sae.encode(x_ND))


ACTIVATION_BUDGET = 1 << 27
"""Feature activations ([tokens, d_sae] floats) a batch may hold when RecordConfig.batch_size is None.

Every batch merges into the top-k and quantile banks at a cost that grows with the banks, not the batch,
so fewer, larger batches cost less per token: on the demo SAE (8192 features) 16-context batches spent
28.9 s in the merges per 32k tokens, 64-context 14.7 s, 128-context 10.8 s. 2^27 floats (512 MB) gives
128 contexts of 128 tokens at 8192 features and 8 at 131072.
"""


def contexts_per_batch(cfg: RecordConfig, context_len: int, d_sae: int) -> int:
    """The configured batch size, or the most contexts whose activations fit ACTIVATION_BUDGET (1..256)."""
    return cfg.batch_size or max(1, min(256, ACTIVATION_BUDGET // max(1, context_len * d_sae)))


@torch.no_grad()
def record_activations(
    model: torch.nn.Module,
    sae: SparseCoder,
    contexts: Iterable[torch.Tensor],
    *,
    site: Site,
    cfg: RecordConfig,
    skip_ids: Sequence[int],
    progress: bool = False,
    dist: Dist | None = None,
) -> Recorder:
    """The streaming part of the pass: truncated forward, encode, fold in; tokens in `skip_ids` are ignored.

    With `dist` of several ranks, rank r takes contexts r, r+N, ... and the ranks' recorders are merged
    (see `record_merge`), so every rank returns the whole pass's recorder.
    """
    dist = dist or Dist()
    device = sae.W_dec.device
    recorder = Recorder(sae.W_dec.shape[0], cfg, device, dist.rank)
    skip = torch.tensor(sorted(set(skip_ids)), dtype=torch.long, device=device)
    bar = tqdm(unit="tok", unit_scale=True, desc="record", disable=not progress or not dist.is_main, dynamic_ncols=True)
    mine = iter(islice(contexts, dist.rank, None, dist.world))
    first = next(mine, None)
    stream = [] if first is None else chain([first], mine)
    batch_size = contexts_per_batch(cfg, 1 if first is None else first.numel(), recorder.d_sae)
    for tokens_BT in batched(stream, batch_size):
        bar.update(tokens_BT.numel())
        tokens_BT = tokens_BT.to(device)
        x_BTD = truncated_forward(model, site, tokens_BT)
        recorder.add(tokens_BT, encode_firing(sae, x_BTD.reshape(-1, x_BTD.shape[-1])), ~torch.isin(tokens_BT, skip))
    bar.close()
    merge_recorders(recorder, dist)
    return recorder


def record_sae(
    model: torch.nn.Module,
    sae: SparseCoder,
    contexts: Iterable[torch.Tensor],
    *,
    site: Site,
    tokenizer: Any,
    cfg: RecordConfig = RecordConfig(),
    progress: bool = False,
    dist: Dist | None = None,
) -> SAERecord:
    """Record every feature of `sae` over `contexts` ([T] token tensors starting with BOS).

    Under torchrun every rank calls this with the same `contexts` and gets the same record; rank 0 alone
    should store it.
    """
    recorder = record_activations(
        model, sae, contexts, site=site, cfg=cfg, skip_ids=special_ids(tokenizer).tolist(), progress=progress,
        dist=dist,
    )
    if recorder.n_tokens == 0:
        raise ValueError("no tokens to record: the contexts were empty or held only special tokens")
    W_dec_FD = sae.W_dec.detach()
    promoted, suppressed = logit_effects(model, W_dec_FD, cfg.n_logits)
    examples = recorder.examples()
    ids = torch.cat([examples.tokens_EW.flatten().long(), promoted.index_FK.flatten(), suppressed.index_FK.flatten()])
    return SAERecord(
        n_tokens=recorder.n_tokens,
        n_contexts=recorder.n_contexts,
        config=cfg,
        count_F=recorder.count_F.cpu(),
        max_F=recorder.max_F.cpu(),
        mean_F=(recorder.total_F / recorder.count_F.clamp_min(1)).float().cpu(),
        hist_FB=recorder.hist_FB.cpu(),
        examples=examples,
        promoted=promoted,
        suppressed=suppressed,
        neighbours=nearest_features(W_dec_FD, cfg.n_neighbours),
        token_text=token_pieces(tokenizer, ids),
    )


def token_pieces(tokenizer: Any, ids: torch.Tensor) -> dict[int, str]:
    """The text each distinct token id stands for on its own; NUL shows as U+2400 (PostgreSQL text refuses NUL)."""
    unique = ids.unique().tolist()
    return {i: piece.replace("\x00", "\u2400") for i, piece in zip(unique, tokenizer.batch_decode([[i] for i in unique]))}

