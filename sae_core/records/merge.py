"""Merge the recording passes of several ranks into the one pass a single process would have made.

Rank r of N records contexts r, r+N, ... (its local context i is global context i*N + r). The merge:
- counts, sums and histograms add, maxima take the max: exact.
- top examples: the union of every rank's kept windows, offered in global (context, token) order to a
  fresh bank, keeps the same windows as one process. A feature's global top-n are each in their rank's
  local top-n, and one process breaks ties between equal activations in favour of the earliest token,
  which the ordered offer reproduces, so the result equals one process's, ties included.
- quantile samples: every activation drew a uniform key and each interval keeps the smallest keys. The
  union of the ranks' samples is re-bucketed against the global max and bottom-k taken again: the merge
  of bottom-k reservoirs, so the merged sample is as uniform as each rank's (the module docstring of
  `recorder` says how the running max bounds that). The keys differ from one process's (each rank draws
  its own), so the samples are a different fair draw, not the same windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..distributed import Dist
from .selection import Entries, GroupBank, interval_of

if TYPE_CHECKING:  # records imports this module to merge its own recorders
    from .recorder import Recorder


def merge_recorders(recorder: Recorder, dist: Dist) -> None:
    """Turn every rank's `recorder` into the merged recorder of the whole pass, in place, on every rank."""
    if not dist.active:
        return
    for name in ("count_F", "total_F", "hist_FB"):
        setattr(recorder, name, dist.sum(getattr(recorder, name)))
    recorder.max_F = dist.max(recorder.max_F)
    top, quantile = (_gathered(bank.entries, dist) for bank in (recorder.top, recorder.quantile))
    recorder.top = _rebuilt(recorder.top, _in_stream_order(top))
    n = recorder.cfg.n_intervals
    feat_M = quantile.group_M // n
    quantile.group_M = feat_M * n + interval_of(quantile.payload["value"], recorder.max_F[feat_M], n)
    recorder.quantile = _rebuilt(recorder.quantile, quantile)
    counts = dist.sum(torch.tensor([recorder.n_tokens, recorder.n_contexts], device=recorder.count_F.device))
    recorder.n_tokens, recorder.n_contexts = (int(c) for c in counts)


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
