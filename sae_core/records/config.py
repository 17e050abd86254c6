"""How much a recording pass keeps per feature."""

from __future__ import annotations

from dataclasses import dataclass


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
    n_coactive: int = 10
    """Features kept per feature as firing most together with it (Jaccard over the recorded tokens); 0 skips counting."""
    batch_size: int | None = None
    """Contexts per forward pass; None sizes batches by ACTIVATION_BUDGET (see `contexts_per_batch`)."""
    dense_density: float = 0.1
    """Density above which a feature counts as dense."""
    seed: int = 0
    """Seed for the quantile samples' random keys."""
