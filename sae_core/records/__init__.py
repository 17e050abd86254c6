"""Recording: what every feature of an SAE responds to, as plain records (no database)."""

from .config import RecordConfig
from .recorder import Recorder, interval_of
from .recording import contexts_per_batch, record_activations, record_sae, token_pieces
from .sae_record import Example, ExampleTable, FeatureRecord, SAERecord

__all__ = [
    "Example",
    "ExampleTable",
    "FeatureRecord",
    "RecordConfig",
    "Recorder",
    "SAERecord",
    "contexts_per_batch",
    "interval_of",
    "record_activations",
    "record_sae",
    "token_pieces",
]
