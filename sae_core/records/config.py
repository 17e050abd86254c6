"""How much a recording pass keeps per feature."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .neighbours import NeighbourSearch, resolve_search


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
    neighbours: NeighbourSearch = "auto"
    """How they are searched: "exact" over all pairs, "approximate" (IVF, see records/neighbours.py), or "auto":
    exact up to EXACT_UP_TO features. A recording stores the search it ran (`for_width`), never "auto"."""
    n_coactive: int = 10
    """Features kept per feature as firing most together with it (Jaccard over the recorded tokens); 0 skips counting."""
    batch_size: int | None = None
    """Contexts per forward pass; None sizes batches by ACTIVATION_BUDGET (see `contexts_per_batch`)."""
    dense_density: float = 0.1
    """Density above which a feature counts as dense."""
    seed: int = 0
    """Seed for the quantile samples' random keys (and the approximate neighbour search's k-means)."""
    dtype: str = "float32"
    """The encoder's compute dtype: "float32" (exact), or "bfloat16" under autocast, for devices that compute it
    fast. The encoder's matmul is most of a wide dictionary's recording (75% at 1,048,576 features on a 2-core
    CPU, in float32; a bf16 matmul runs 4x faster there with AMX). In bfloat16 activations are read to bf16's 3
    significant digits, and a near-tie at the k-th largest pre-activation may pick another feature."""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"unknown recording dtype {self.dtype!r}; choose float32 or bfloat16")

    def for_width(self, d_sae: int) -> RecordConfig:
        """This config as a recording of `d_sae` features runs and stores it: `auto` resolved to its search.

        The stored config has to say whether the neighbours are exact; "auto" would leave that to a threshold
        that may change.
        """
        return replace(self, neighbours=resolve_search(self.neighbours, d_sae))
