"""SAE architectures, found by name through one registry, and loading from the layouts the field uses."""

from .artifact import SAEFormatError
from .base import SAE, Runtime, SAEConfig, TrainOutput
from .formats import load_sae, load_sae_and_layout
from .registry import ARCHITECTURES, build_sae, sae_class, takes_k, transcodes

__all__ = [
    "ARCHITECTURES", "SAE", "Runtime", "SAEConfig", "SAEFormatError", "TrainOutput", "build_sae", "load_sae",
    "load_sae_and_layout", "sae_class", "takes_k", "transcodes",
]
