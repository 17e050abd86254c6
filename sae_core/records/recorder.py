"""Per-feature statistics and example windows, accumulated over the batches of a recording pass.

Quantile intervals. Interval i of a feature holds its non-zero activations in [i/n, (i+1)/n) x max
(the last interval closed), where max is the feature's max over the whole pass. The max is unknown until
the pass ends, so intervals are kept relative to the running max: every non-zero activation draws a
uniform random key and each interval keeps the `per_interval` entries with the smallest keys (a bottom-k
reservoir, a uniform sample without replacement). When a feature's running max grows, its kept samples
are re-bucketed against the new max. Samples therefore always lie in their final intervals. The sample
is exactly uniform over the tokens seen after the feature's last max increase; earlier tokens are
represented by the survivors of their old intervals, which is uniform within each old interval. The
alternative, a second pass once the maxima are known, would double the model compute.

Ranks. Rank r of N records contexts r, r+N, ... (its local context i is global context i*N + r), and
`Recorder.merge_ranks` turns the ranks' recorders into the one pass a single process would have made:
- counts, sums and histograms add, maxima take the max: exact.
- top examples: the union of every rank's kept windows, offered in global (context, token) order to a
  fresh bank, keeps the same windows as one process. A feature's global top-n are each in their rank's
  local top-n, and one process breaks ties between equal activations in favour of the earliest token,
  which the ordered offer reproduces, so the result equals one process's, ties included.
- quantile samples: every activation drew a uniform key and each interval keeps the smallest keys. The
  union of the ranks' samples is re-bucketed against the global max and bottom-k taken again: the merge
  of bottom-k reservoirs, so the merged sample is as uniform as each rank's (the running max bounds that
  as above). The keys differ from one process's (each rank draws its own), so the samples are a
  different fair draw, not the same windows.
"""

from __future__ import annotations

import numpy as np
import torch

from ..distributed import Dist
from .coactivation import CoactivationCounter, TorchArrays
from .config import RecordConfig
from .firing import Firing
from .sae_record import HIST_EDGES, ExampleTable
from .selection import Entries, GroupBank, rank_in_group

FLOAT16_MAX = 65504.0


class Recorder:
    """Accumulates per-feature statistics and example windows over batches of contexts."""

    def __init__(self, d_sae: int, cfg: RecordConfig, device: torch.device | str = "cpu", rank: int = 0):
        self.cfg = cfg
        self.d_sae = d_sae
        self.token_count = torch.zeros((), dtype=torch.long, device=device)
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
        self.coactive = CoactivationCounter(d_sae, TorchArrays(device)) if cfg.n_coactive else None

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
        B, _T = tokens_BT.shape
        valid_N = valid_BT.reshape(-1)
        firing = firing.take(valid_N[firing.row_C])
        feat_C, value_C = firing.feat_C, firing.value_C
        # Statistics from the firing entries alone: column sums over the dense [N, F] matrix cost 40% of
        # the whole merge on the demo SAE (activations are >= 0, so nothing else contributes). index_add_, not
        # bincount: CUDA's bincount reads its input's min and max back to the host, and on the CPU it took
        # twice index_add_'s time (16k tokens, k=32).
        self.count_F.index_add_(0, feat_C, torch.ones_like(feat_C))
        self.total_F.index_add_(0, feat_C, value_C.double())
        self.max_F.scatter_reduce_(0, feat_C, value_C, "amax")
        self._add_hist(feat_C, value_C)
        if self.coactive is not None:
            self.coactive.add(firing.row_C, feat_C)

        def windows(mask: torch.Tensor) -> dict[str, torch.Tensor]:
            return self._windows(tokens_BT, firing, valid_N, mask)

        self.top.merge(feat_C, value_C, windows)
        self._sample_quantiles(feat_C, value_C, windows)
        self.token_count += valid_BT.sum()
        self.n_contexts += B

    @property
    def n_tokens(self) -> int:
        """Tokens recorded (ignored ones not counted); `token_count` stays on the device so no batch waits on it."""
        return int(self.token_count)

    def _add_hist(self, feat_C: torch.Tensor, value_C: torch.Tensor) -> None:
        """Count non-zero activations into the shared log-spaced grid."""
        n_bins = self.hist_FB.shape[1]
        bin_C = torch.bucketize(value_C, self.edges)
        self.hist_FB.view(-1).index_add_(0, feat_C * n_bins + bin_C, torch.ones_like(feat_C))

    def _sample_quantiles(self, feat_C, value_C, windows) -> None:
        """Re-bucket kept samples against the maxima, then offer this batch's activations with random keys.

        Samples move only where a max grew. Asking the device whether any did cost a wait every batch; the
        re-bucketing it would save is elementwise over the kept samples, and some max grows in nearly every batch.
        """
        touched_G = self.quantile.regroup(self._regrouped(self.quantile.entries))
        group_C = self._quantile_group(feat_C, value_C)
        key_C = torch.rand(value_C.shape, generator=self.generator, device=value_C.device)
        self.quantile.merge(group_C, -key_C, windows, touched_G)

    def _quantile_group(self, feat_X: torch.Tensor, value_X: torch.Tensor) -> torch.Tensor:
        """The (feature, interval) group of each activation, against the current maxima."""
        n = self.cfg.n_intervals
        return feat_X * n + interval_of(value_X, self.max_F[feat_X], n)

    def _regrouped(self, quantile: Entries) -> torch.Tensor:
        """The groups of kept quantile samples against the current maxima, so they stay in their final intervals."""
        return self._quantile_group(quantile.group_M // self.cfg.n_intervals, quantile.payload["value"])

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

    def merge_ranks(self, dist: Dist) -> None:
        """Turn every rank's recorder into the recorder of the whole pass, in place, on every rank."""
        if not dist.active:
            return
        self.count_F, self.total_F, self.hist_FB = (dist.sum(t) for t in (self.count_F, self.total_F, self.hist_FB))
        self.max_F = dist.max(self.max_F)
        top, quantile = (_gathered(bank.entries, dist) for bank in (self.top, self.quantile))
        self.top = _rebuilt(self.top, _in_stream_order(top))
        quantile.group_M = self._regrouped(quantile)
        self.quantile = _rebuilt(self.quantile, quantile)
        if self.coactive is not None:
            self.coactive.merge_ranks(dist)
        counts = dist.sum(torch.stack([self.token_count, self.token_count.new_tensor(self.n_contexts)]))
        self.token_count, self.n_contexts = counts[0], int(counts[1])


def interval_of(value: torch.Tensor, max_: torch.Tensor, n_intervals: int) -> torch.Tensor:
    """Interval number of each activation relative to its feature's max (the top interval is closed)."""
    frac = value / max_.clamp_min(torch.finfo(value.dtype).tiny)
    return (frac * n_intervals).floor().long().clamp(0, n_intervals - 1)


def _gathered(entries: Entries, dist: Dist) -> Entries:
    """Every rank's entries, local context numbers turned global."""
    local = Entries(entries.group_M, entries.score_M,
                    {**entries.payload, "context": entries.payload["context"] * dist.world + dist.rank})
    return Entries(dist.gather_cat(local.group_M), dist.gather_cat(local.score_M),
                   {k: dist.gather_cat(v) for k, v in local.payload.items()})


def _in_stream_order(entries: Entries) -> Entries:
    """Entries sorted by global (context, token), the order in which one process met them."""
    token = entries.payload["start"] + entries.payload["peak"]
    width = int(token.max()) + 1 if len(entries) else 1
    return entries.take(torch.argsort(entries.payload["context"] * width + token, stable=True))


def _rebuilt(bank: GroupBank, entries: Entries) -> GroupBank:
    """A fresh bank of the same shape holding the best of `entries`."""
    fresh = GroupBank(bank.n_groups, bank.slots, entries.take(torch.zeros(len(entries), dtype=torch.bool)))
    fresh.merge(entries.group_M, entries.score_M, lambda keep: {k: v[keep] for k, v in entries.payload.items()})
    return fresh
