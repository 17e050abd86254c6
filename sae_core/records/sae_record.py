"""A recording pass's result as plain values: column tensors over features, and per-feature views of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import RecordConfig
from .directions import TopTable

HIST_EDGES = torch.logspace(-5, 5, 121)
"""Shared log-spaced grid (12 bins a decade) for activation histograms; each feature keeps its occupied span."""


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
    coactive: TopTable | None = None
    """Per feature, the features firing most together with it by Jaccard (index -1 pads); None if not counted."""

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
