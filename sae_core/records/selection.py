"""Keep the best few entries of every group over a stream, merging whole batches at once.

Entries live in flat tensors (one row per kept entry, with its group id) rather than a [groups, slots]
grid, so that a batch merge is one sort over the touched groups and entries can move between groups
(as quantile samples do when a feature's running max grows). Memory is bounded by groups x slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Entries:
    """A set of entries: group id, score (higher is kept), and per-entry payload tensors."""

    group_M: torch.Tensor
    score_M: torch.Tensor
    payload: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.group_M.numel()

    def take(self, index: torch.Tensor) -> Entries:
        """The entries at `index` (a boolean mask or integer positions)."""
        return Entries(self.group_M[index], self.score_M[index], {k: v[index] for k, v in self.payload.items()})

    @staticmethod
    def cat(parts: list[Entries]) -> Entries:
        """Concatenate entry sets that share payload names."""
        return Entries(
            torch.cat([p.group_M for p in parts]),
            torch.cat([p.score_M for p in parts]),
            {k: torch.cat([p.payload[k] for p in parts]) for k in parts[0].payload},
        )


def rank_in_group(group_M: torch.Tensor, score_M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An order sorting entries by group then descending score (ties in input order), and each sorted entry's
    rank in its group.

    One stable sort of a 64-bit key (group above, the score's order-preserving integer image below) does
    what two stable argsorts did, in a third less time on the recording pass's candidate sets.
    """
    key_M = (group_M.long() << 32) | descending_bits(score_M)
    sorted_key, order = torch.sort(key_M, stable=True)
    sorted_groups = sorted_key >> 32
    first = torch.searchsorted(sorted_groups, sorted_groups, side="left")
    return order, torch.arange(order.numel(), device=order.device) - first


def descending_bits(score_M: torch.Tensor) -> torch.Tensor:
    """Non-negative int64 values below 2^32 whose ascending order is the float32 scores' descending order.

    The IEEE bit pattern of a float, read as a signed integer and with the magnitude bits of negatives
    flipped, orders like the float; negating the score first turns that into descending order. Adding 0.0
    makes -0.0 into +0.0, so the two zeros tie as they compare.
    """
    bits = (-score_M.float() + 0.0).view(torch.int32).long()
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)) + (1 << 31)


class GroupBank:
    """The `slots` highest-scoring entries of each of `n_groups` groups, kept as a stream goes by."""

    def __init__(self, n_groups: int, slots: int, empty: Entries):
        self.n_groups = n_groups
        self.slots = slots
        self.entries = empty
        device = empty.score_M.device
        self.threshold_G = torch.full((n_groups,), -torch.inf, device=device)

    def regroup(self, group_M: torch.Tensor) -> torch.Tensor:
        """Move kept entries to new groups; returns a [n_groups] mask of the groups that changed.

        Entries that stay mark a spare last slot rather than being masked out, so no size is read back from
        a GPU.
        """
        moved = group_M != self.entries.group_M
        touched_G = torch.zeros(self.n_groups + 1, dtype=torch.bool, device=group_M.device)
        touched_G[torch.where(moved, self.entries.group_M, self.n_groups)] = True
        touched_G[torch.where(moved, group_M, self.n_groups)] = True
        self.entries.group_M = group_M
        return touched_G[:-1]

    def _best_per_group(self, group_C: torch.Tensor, score_C: torch.Tensor, keep_C: torch.Tensor) -> torch.Tensor:
        """Narrow `keep_C` to the `slots` best candidates of each group, keeping their stream order.

        Only these can survive the merge, and payloads are built for kept candidates alone: without this a
        first batch of a densely firing SAE (every candidate beats the empty bank) built a window for every
        firing token and feature, gigabytes of them.
        """
        index = keep_C.nonzero().squeeze(1)
        order, rank = rank_in_group(group_C[index], score_C[index])
        narrowed = torch.zeros_like(keep_C)
        narrowed[index[order[rank < self.slots]]] = True
        return narrowed

    def merge(
        self,
        group_C: torch.Tensor,
        score_C: torch.Tensor,
        payload_of: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        touched_G: torch.Tensor | None = None,
    ) -> None:
        """Offer candidates; `payload_of(mask)` builds payloads only for those that can still be kept.

        `touched_G` marks groups whose kept entries changed since the last merge (see `regroup`); their
        stored thresholds are stale, so they are re-selected whatever the candidates.
        """
        threshold_G = self.threshold_G.clone()
        if touched_G is not None:
            threshold_G[touched_G] = -torch.inf
        keep_C = self._best_per_group(group_C, score_C, score_C > threshold_G[group_C])
        touched_G = torch.zeros(self.n_groups, dtype=torch.bool, device=keep_C.device) if touched_G is None else touched_G.clone()
        if not keep_C.any() and not touched_G.any():
            return
        candidates = Entries(group_C[keep_C], score_C[keep_C], payload_of(keep_C))
        touched_G[candidates.group_M] = True
        in_touched = touched_G[self.entries.group_M]
        pool = Entries.cat([self.entries.take(in_touched), candidates])
        order, rank = rank_in_group(pool.group_M, pool.score_M)
        kept_rank = rank[rank < self.slots]
        kept = pool.take(order[rank < self.slots])
        self.entries = Entries.cat([self.entries.take(~in_touched), kept])
        self.threshold_G[touched_G] = -torch.inf
        full = kept_rank == self.slots - 1
        self.threshold_G[kept.group_M[full]] = kept.score_M[full]
