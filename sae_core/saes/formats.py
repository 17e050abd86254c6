"""Read SAEs written by saescope, SAELens, EleutherAI sparsify, Gemma Scope and dictionary_learning.

Each reader turns its layout into (SAEConfig, tensors in SAELens names and shapes); one assembler checks
the tensors (present, right shape, finite) and builds the in-memory SAE, so every layout gets the same
validation and the same clear errors.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..finite import all_finite
from ..provenance import Provenance
from .artifact import CFG_FILE, WEIGHTS_FILE, SAEFormatError, read_json, read_sae, read_safetensors, sae_directory
from .base import SAE, SAEConfig
from .registry import ARCHITECTURES, sae_class

SPARSIFY_WEIGHTS = "sae.safetensors"
GEMMA_SCOPE_FILE = "params.npz"
DICTIONARY_LEARNING_FILE = "ae.pt"

SAELENS_ARCHITECTURES = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
"""SAELens `architecture` values saescope reads, and the architecture each becomes."""


@dataclass(frozen=True)
class Layout:
    """One way the field writes an SAE: its name, the file that marks it, and its reader."""

    name: str
    """The name the store keeps as the SAE's `source_format`."""
    marker: str
    """The file whose presence in a directory means this layout."""
    read: Callable[[Path], tuple[SAEConfig, dict[str, torch.Tensor]]]
    """The directory -> (config, tensors in SAELens names and shapes)."""


def load_sae(path: str | Path) -> SAE:
    """Load an SAE from a directory or file in any supported layout, or raise SAEFormatError saying why."""
    return load_sae_and_layout(path)[0]


def load_sae_and_layout(path: str | Path) -> tuple[SAE, Layout]:
    """The SAE at `path` and the layout it was read in."""
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"no SAE at {path}: the path does not exist")
    directory = sae_directory(path)
    for layout in LAYOUTS:
        if (directory / layout.marker).is_file() and (path.is_dir() or path.name == layout.marker):
            cfg, tensors = layout.read(directory)
            return assemble(cfg, tensors, directory / layout.marker), layout
    if (directory / CFG_FILE).is_file():
        raise SAEFormatError(f"{directory} has {CFG_FILE} but no {WEIGHTS_FILE} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify)")
    raise SAEFormatError(
        f"no SAE found at {path}: expected {', '.join(layout.marker for layout in LAYOUTS)} "
        "(SAELens/saescope, sparsify, Gemma Scope, dictionary_learning)"
    )


def assemble(cfg: SAEConfig, tensors: dict[str, torch.Tensor], source: Path) -> SAE:
    """Build the SAE after checking every tensor it needs is present, correctly shaped and finite."""
    sae = sae_class(cfg.architecture)(cfg)  # no random initialisation: every tensor it would fill is copied in
    for name, shape in sae.saved_shapes().items():
        if name not in tensors:
            raise SAEFormatError(f"{source}: missing tensor {name!r} (found {', '.join(sorted(tensors)) or 'none'})")
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise SAEFormatError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape}")
        if not all_finite(tensor):
            raise SAEFormatError(f"{source}: tensor {name!r} contains NaN or infinite values")
    sae.load_tensors_(tensors)
    return sae.eval()


def make_config(architecture: str, source: Path, **values: Any) -> SAEConfig:
    """An SAEConfig from a foreign config's values, turning bad sizes into SAEFormatError."""
    if architecture not in ARCHITECTURES:
        raise SAEFormatError(f"{source}: unknown SAE architecture {architecture!r}")
    known = {f.name for f in fields(SAEConfig)}
    try:
        return SAEConfig(architecture=architecture, **{k: v for k, v in values.items() if k in known})
    except (TypeError, ValueError) as err:
        raise SAEFormatError(f"{source}: bad config ({err})") from None


def int_field(cfg: dict[str, Any], name: str, source: Path) -> int:
    """A required positive integer field of a foreign config."""
    value = cfg.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SAEFormatError(f"{source}: field {name!r} must be a positive integer, got {value!r}")
    return value


def read_saelens(directory: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """cfg.json + sae_weights.safetensors, as SAELens (v5 flat or v6 with metadata) and saescope write it."""
    source = directory / CFG_FILE
    raw, tensors = read_sae(directory)
    if isinstance(raw.get("saescope"), dict):
        own = raw["saescope"]
        values = {k: v for k, v in own.items() if k != "architecture"}
        return make_config(own.get("architecture"), source, provenance=Provenance.from_cfg(own), **values), tensors
    architecture = SAELENS_ARCHITECTURES.get(raw.get("architecture", "standard"))
    if architecture is None:
        raise SAEFormatError(
            f"{source}: SAELens architecture {raw.get('architecture')!r} is not supported "
            f"(supported: {', '.join(SAELENS_ARCHITECTURES)})"
        )
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise SAEFormatError(
            f"{source}: normalize_activations={raw['normalize_activations']!r} needs a run-time scaling "
            "saescope does not apply; fold it into the weights first"
        )
    if raw.get("rescale_acts_by_decoder_norm"):
        tensors = fold_decoder_norms(tensors, source)
    meta = {**raw, **(raw.get("metadata") or raw.get("meta") or {})}
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    return make_config(
        architecture,
        source,
        d_in=int_field(raw, "d_in", source),
        d_sae=int_field(raw, "d_sae", source),
        k=k if sae_class(architecture).takes_k else None,
        provenance=Provenance.of_hook(meta.get("hook_name"), model=meta.get("model_name"),
                                      dataset=meta.get("dataset_path"), context_len=meta.get("context_size")),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
    ), tensors


def fold_decoder_norms(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """SAELens's rescale_acts_by_decoder_norm as plain weights.

    It encodes pre * |W_dec row| and decodes (f / |W_dec row|) @ W_dec; scaling the encoder by the norms
    and the decoder rows to unit norm computes the same features and reconstructions with no run-time step.
    """
    if "W_dec" not in tensors or tensors["W_dec"].ndim != 2:
        raise SAEFormatError(f"{source}: missing 2-D tensor 'W_dec' (found {', '.join(sorted(tensors)) or 'none'})")
    norm_F = tensors["W_dec"].float().norm(dim=1).clamp_min(1e-8)
    folded = dict(tensors)
    folded["W_dec"] = tensors["W_dec"].float() / norm_F[:, None]
    for name in ("W_enc", "b_enc"):
        if name in tensors and tensors[name].shape[-1:] == norm_F.shape:  # else assemble reports the shape
            folded[name] = tensors[name].float() * norm_F
    return folded


def read_sparsify(directory: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """EleutherAI sparsify: cfg.json (k, num_latents, d_in) + sae.safetensors (encoder.weight [F, D], W_dec, b_dec).

    sparsify encodes topk(relu(encoder(x - b_dec))); our TopK takes relu after topk, the same features.
    """
    source = directory / CFG_FILE
    raw = read_json(source)
    tensors = read_safetensors(directory / SPARSIFY_WEIGHTS)
    if raw.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{source}: sparsify activation {raw['activation']!r} is not supported (only topk)")
    if raw.get("transcode") or raw.get("skip_connection") or "W_skip" in tensors:
        raise SAEFormatError(f"{source}: sparsify transcoders and skip connections are not supported")
    renamed = {"W_dec": tensors.get("W_dec"), "b_dec": tensors.get("b_dec"), "b_enc": tensors.get("encoder.bias")}
    if "encoder.weight" in tensors:
        renamed["W_enc"] = tensors["encoder.weight"].T
    d_in = int_field(raw, "d_in", source)
    d_sae = raw.get("num_latents") or d_in * int(raw.get("expansion_factor") or 0)
    cfg = make_config("topk", source, d_in=d_in, d_sae=d_sae, k=int_field(raw, "k", source))
    return cfg, {name: t for name, t in renamed.items() if t is not None}


def read_gemma_scope(directory: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Gemma Scope params.npz: W_enc [D, F], W_dec [F, D], b_enc, b_dec, threshold; no b_dec on the input."""
    source = directory / GEMMA_SCOPE_FILE
    try:
        with np.load(source, allow_pickle=False) as npz:
            tensors = {name: torch.from_numpy(np.asarray(npz[name], dtype=np.float32)) for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise SAEFormatError(f"{source}: unreadable .npz file ({err})") from None
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise SAEFormatError(f"{source}: missing 2-D tensor 'W_enc' (found {', '.join(sorted(tensors)) or 'none'})")
    d_in, d_sae = tensors["W_enc"].shape
    return make_config("jumprelu", source, d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False), tensors


def read_dictionary_learning(directory: Path) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """saprmarks/dictionary_learning: ae.pt (a state dict, loaded with weights_only) + config.json."""
    source = directory / DICTIONARY_LEARNING_FILE
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe pickles
        raise SAEFormatError(f"{source}: unreadable state dict ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise SAEFormatError(f"{source}: expected a state dict, got {type(state).__name__}")
    config = read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
    trainer = config.get("trainer", {}) if isinstance(config.get("trainer"), dict) else {}
    dict_class = trainer.get("dict_class") or _guess_dict_class(state, source)
    convert = DICTIONARY_LEARNING_CLASSES.get(dict_class)
    if convert is None:
        raise SAEFormatError(
            f"{source}: dictionary_learning class {dict_class!r} is not supported "
            f"(supported: {', '.join(DICTIONARY_LEARNING_CLASSES)})"
        )
    architecture, tensors, extra = convert(state, source)
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise SAEFormatError(f"{source}: missing 2-D encoder weight (found {', '.join(sorted(state)) or 'none'})")
    d_in, d_sae = tensors["W_enc"].shape
    hook = f"blocks.{trainer['layer']}.hook_resid_post" if isinstance(trainer.get("layer"), int) else None
    return make_config(architecture, source, d_in=d_in, d_sae=d_sae,
                       provenance=Provenance.of_hook(hook, model=trainer.get("lm_name")), **extra), tensors


def _guess_dict_class(state: dict, source: Path) -> str:
    """The dictionary class a state dict without config.json must come from, when its keys say so."""
    keys = set(state)
    if {"W_enc", "threshold"} <= keys:
        return "JumpReluAutoEncoder"
    if {"encoder.weight", "bias"} <= keys:
        return "AutoEncoder"
    if {"encoder.weight", "decoder.bias"} <= keys:
        return "AutoEncoderNew"
    raise SAEFormatError(f"{source}: cannot tell the dictionary class without config.json (keys: {', '.join(sorted(keys))})")


def _linear_pair(state: dict, b_dec_key: str) -> dict[str, torch.Tensor]:
    """encoder/decoder nn.Linear weights in SAELens orientation."""
    names = {"W_enc": "encoder.weight", "b_enc": "encoder.bias", "W_dec": "decoder.weight", "b_dec": b_dec_key}
    return {ours: (state[theirs].T if ours.startswith("W") else state[theirs]).float()
            for ours, theirs in names.items() if theirs in state}


def _dl_relu(state: dict, source: Path):
    """AutoEncoder: relu(encoder(x - bias)); decoder(f) + bias."""
    return "relu", _linear_pair(state, "bias"), {}


def _dl_relu_new(state: dict, source: Path):
    """AutoEncoderNew (Anthropic April 2024): relu(encoder(x)); decoder(f) with its own bias."""
    return "relu", _linear_pair(state, "decoder.bias"), {"apply_b_dec_to_input": False}


def _dl_k(state: dict, source: Path) -> int:
    if "k" not in state:
        raise SAEFormatError(f"{source}: missing buffer 'k'")
    return int(state["k"])


def _dl_topk(state: dict, source: Path):
    """AutoEncoderTopK: topk(relu(encoder(x - b_dec))); decoder(f) + b_dec."""
    return "topk", _linear_pair(state, "b_dec"), {"k": _dl_k(state, source)}


def _dl_batchtopk(state: dict, source: Path):
    """BatchTopKSAE: relu(pre) kept above one learned scalar threshold at inference."""
    tensors = _linear_pair(state, "b_dec")
    if "threshold" in state:
        # A negative threshold means "never set": the gate is then plain ReLU, i.e. a threshold of 0.
        threshold = state["threshold"].float().reshape(-1)[:1].clamp_min(0)
        tensors["threshold"] = threshold.expand(tensors["W_enc"].shape[1]).clone() if "W_enc" in tensors else threshold
    return "batchtopk", tensors, {"k": _dl_k(state, source)}


def _dl_jumprelu(state: dict, source: Path):
    """JumpReluAutoEncoder: (x @ W_enc + b_enc) kept above a per-feature threshold; no b_dec on the input."""
    tensors = {name: state[name].float() for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold") if name in state}
    return "jumprelu", tensors, {"apply_b_dec_to_input": False}


DICTIONARY_LEARNING_CLASSES = {
    "AutoEncoder": _dl_relu,
    "AutoEncoderNew": _dl_relu_new,
    "AutoEncoderTopK": _dl_topk,
    "BatchTopKSAE": _dl_batchtopk,
    "JumpReluAutoEncoder": _dl_jumprelu,
}
"""dictionary_learning's class names -> converters to (architecture, SAELens-named tensors, config fields)."""


LAYOUTS = (
    Layout("saelens", WEIGHTS_FILE, read_saelens),
    Layout("sparsify", SPARSIFY_WEIGHTS, read_sparsify),
    Layout("gemma_scope", GEMMA_SCOPE_FILE, read_gemma_scope),
    Layout("dictionary_learning", DICTIONARY_LEARNING_FILE, read_dictionary_learning),
)
"""Every layout saescope reads, tried in this order."""
