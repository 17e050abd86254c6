"""A set of per-layer transcoders in the layout circuit-tracer reads (its `transcoder_set`), and back.

The directory holds `config.yaml` and one `layer_{i}.safetensors` per layer, for layers 0..L-1 with none missing
(circuit-tracer refuses a set with a gap). Each layer file holds, in circuit-tracer's `SingleLayerTranscoder`
names and shapes:
- `W_enc` [d_transcoder, d_model] (used as F.linear(x, W_enc, b_enc): ours transposed), `b_enc` [d_transcoder];
- `W_dec` [d_transcoder, d_model], `b_dec` [d_model];
- `W_skip` [d_model, d_model] for a skip transcoder (applied as x @ W_skip.T, as ours is);
- `activation_function.threshold` [d_transcoder] for JumpReLU (the parameter of its JumpReLU module); without
  it circuit-tracer's loader computes ReLU, so a TopK transcoder, which neither computes, is refused.
`config.yaml` names the model, `model_kind: transcoder_set`, the hooks (`mlp.hook_in`, `mlp.hook_out`: the
MLP's input after the pre-MLP norm and its output) and the scan; it lists no `transcoders`, so circuit-tracer
finds the `layer_*.safetensors` of a hub repository holding the directory. docs/formats.md has the details.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from ..fileio import atomic_write
from ..provenance import Provenance
from ..sites import Site
from .artifact import SAEFormatError, read_safetensors
from .base import SAE
from .formats import assemble, make_config
from .registry import ARCHITECTURES

CONFIG_FILE = "config.yaml"
INPUT_HOOK = "mlp.hook_in"
OUTPUT_HOOK = "mlp.hook_out"
THRESHOLD = "activation_function.threshold"
_LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")


def layer_file(layer: int) -> str:
    """The file of one layer's transcoder."""
    return f"layer_{layer}.safetensors"


def write_circuit_tracer(saes: Sequence[SAE], directory: str | Path, scan: str | None = None) -> Path:
    """Write transcoders, one per layer from 0 on, as a circuit-tracer transcoder set in `directory`."""
    by_layer = _check_set(saes)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for layer, sae in by_layer.items():
        atomic_write(directory / layer_file(layer), partial(_save, _circuit_tracer_tensors(sae)))
    first = by_layer[0]
    model = first.cfg.provenance.model
    config = {
        "model_name": model,
        "model_kind": "transcoder_set",
        "feature_input_hook": INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        "scan": scan or f"{model}/saescope-{first.cfg.architecture}-{first.cfg.d_sae}",
    }
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(config, sort_keys=False)))
    return directory


def _check_set(saes: Sequence[SAE]) -> dict[int, SAE]:
    """The transcoders by layer, once they make a set circuit-tracer can compute: else SAEFormatError saying why."""
    if not saes:
        raise SAEFormatError("no transcoders to write")
    by_layer: dict[int, SAE] = {}
    for sae in saes:
        site, cfg = sae.cfg.provenance.site, sae.cfg
        if not sae.transcodes or site is None or site.kind != "mlp_in":
            raise SAEFormatError(f"circuit-tracer reads transcoders of MLP inputs; this is a {cfg.architecture} "
                                 f"at {site.name if site else 'an unknown site'}")
        if sae.circuit_tracer_activation is None:
            readable = ", ".join(a for a, cls in ARCHITECTURES.items() if cls.circuit_tracer_activation)
            raise SAEFormatError(f"circuit-tracer computes no {cfg.architecture} features (only ReLU and JumpReLU): "
                                 f"train {readable} to export")
        if site.layer in by_layer:
            raise SAEFormatError(f"two transcoders read layer {site.layer}; give one per layer")
        by_layer[site.layer] = sae
    missing = sorted(set(range(max(by_layer) + 1)) - set(by_layer))
    if missing:
        raise SAEFormatError(f"circuit-tracer needs a transcoder at every layer from 0; layers "
                             f"{', '.join(map(str, missing))} have none")
    kinds = {(s.cfg.architecture, s.cfg.d_in, s.cfg.d_sae, s.cfg.skip_connection, s.cfg.provenance.model) for s in saes}
    if len(kinds) > 1:
        raise SAEFormatError("circuit-tracer's set needs one architecture, width, dictionary size, skip setting and "
                             f"model for every layer; these differ: {sorted(kinds, key=str)}")
    return dict(sorted(by_layer.items()))


def _save(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file(tensors, path, metadata={"format": "pt"})


def _circuit_tracer_tensors(sae: SAE) -> dict[str, torch.Tensor]:
    """One transcoder's tensors in circuit-tracer's names and shapes."""
    tensors = sae.saved_tensors()
    tensors["W_enc"] = tensors["W_enc"].T.contiguous()
    if "threshold" in tensors:
        tensors[THRESHOLD] = tensors.pop("threshold")
    return tensors


def read_circuit_tracer(directory: str | Path) -> list[SAE]:
    """The transcoders of a circuit-tracer transcoder set directory (ReLU or JumpReLU), by layer."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise SAEFormatError(f"{directory} is not a circuit-tracer transcoder set (no {CONFIG_FILE})")
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as err:
        raise SAEFormatError(f"{config_path}: not valid YAML ({err})") from None
    if not isinstance(config, dict) or config.get("model_kind", "transcoder_set") != "transcoder_set":
        raise SAEFormatError(f"{config_path}: not a per-layer transcoder set (model_kind: transcoder_set)")
    return [_read_layer(path, layer, config.get("model_name")) for layer, path in enumerate(_layer_paths(directory, config))]


def _layer_paths(directory: Path, config: dict) -> list[Path]:
    """Each layer's file: the config's `transcoders` list (relative to the directory), or the layer_*.safetensors there."""
    listed = config.get("transcoders")
    if listed:
        remote = [p for p in listed if str(p).startswith("hf://")]
        if remote:
            raise SAEFormatError(f"{directory / CONFIG_FILE} lists hub files ({remote[0]}); download them first")
        return [directory / p for p in listed]
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := _LAYER_FILE.match(p.name))}
    if not found:
        raise SAEFormatError(f"{directory} holds no layer_N.safetensors")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise SAEFormatError(f"{directory}: no transcoder for layers {', '.join(map(str, missing))}")
    return [found[layer] for layer in sorted(found)]


def _read_layer(path: Path, layer: int, model: str | None) -> SAE:
    """One layer's file as a ReLU or JumpReLU transcoder reading that layer's MLP input."""
    if not path.is_file():
        raise SAEFormatError(f"missing transcoder file {path}")
    tensors = read_safetensors(path)
    for name in ("W_enc", "b_enc", "b_dec"):
        if name not in tensors:
            raise SAEFormatError(f"{path}: missing tensor {name!r} (found {', '.join(sorted(tensors)) or 'none'})")
    tensors["W_enc"] = tensors["W_enc"].T
    activation = "relu"
    if THRESHOLD in tensors:
        tensors["threshold"] = tensors.pop(THRESHOLD)
        activation = "jump_relu"
    architecture = next(a for a, cls in ARCHITECTURES.items() if cls.circuit_tracer_activation == activation)
    cfg = make_config(architecture, path, d_in=tensors["b_dec"].shape[0], d_sae=tensors["b_enc"].shape[0],
                      skip_connection="W_skip" in tensors, apply_b_dec_to_input=False,
                      provenance=Provenance(model=model, site=Site(layer, "mlp_in")))
    return assemble(cfg, tensors, path)
