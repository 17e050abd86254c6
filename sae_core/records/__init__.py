"""Recording: what every feature of an SAE responds to, as plain records (no database)."""

from .recorder import (
    Example,
    ExampleTable,
    FeatureRecord,
    Recorder,
    RecordConfig,
    SAERecord,
    contexts_per_batch,
    interval_of,
    read_sae_reports,
    record_activations,
    record_sae,
    token_pieces,
)

__all__ = [
    "Example",
    "ExampleTable",
    "FeatureRecord",
    "RecordConfig",
    "Recorder",
    "SAERecord",
    "contexts_per_batch",
    "interval_of",
    "read_sae_reports",
    "record_activations",
    "record_sae",
    "token_pieces",
]
