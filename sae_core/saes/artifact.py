"""The SAE directory: the one place that names its files and reads and writes them.

A saescope SAE directory holds the SAE in SAELens layout and the reports of the runs that made it:
- `cfg.json` and `sae_weights.safetensors`: the SAE (SAELens reads them as they are);
- `metrics.json`: evaluation figures, merged over runs (reconstruction and CE loss come from separate runs);
- `training_log.jsonl`: one JSON line per logged training step;
- `checkpoint.pt`, or `checkpoint.rankR.pt` per feature shard: the trainer's resume state.

A set directory holds SAEs of one model at several sites, trained from one several-site harvest: an SAE
directory per site, named after the site, listed in forward order by `sae_set.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..fileio import atomic_write, atomic_write_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
METRICS_FILE = "metrics.json"
LOG_FILE = "training_log.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
SET_FILE = "sae_set.json"
SET_FORMAT = "saescope-sae-set/1"


class SAEFormatError(ValueError):
    """An SAE directory or file that cannot be read as any supported layout; the message says why."""


def sae_directory(path: str | Path) -> Path:
    """The directory an SAE path points into (the path itself, or the directory of a file in it)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def checkpoint_file(shard_rank: int | None = None) -> str:
    """The checkpoint's name: one for the whole SAE, or one per feature shard (each rank saves its own)."""
    return CHECKPOINT_FILE if shard_rank is None else f"checkpoint.rank{shard_rank}.pt"


# --- cfg and weights ---------------------------------------------------------------------------------


def write_sae(directory: str | Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write cfg.json and sae_weights.safetensors atomically into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(directory / CFG_FILE, cfg)
    return directory


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a config file, or SAEFormatError."""
    if not path.is_file():
        raise SAEFormatError(f"missing config file {path}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SAEFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise SAEFormatError(f"{path}: expected a JSON object")
    return value


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or SAEFormatError for a corrupt one."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise SAEFormatError(f"{path}: unreadable safetensors file ({err})") from None


def read_sae(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """cfg.json and the tensors of sae_weights.safetensors."""
    return read_json(directory / CFG_FILE), read_safetensors(directory / WEIGHTS_FILE)


# --- a set of SAEs at several sites ------------------------------------------------------------------


def write_sae_set(directory: str | Path, sites: Sequence[str]) -> dict[str, Path]:
    """Make `directory` a set directory for one SAE per site (listed in the order given); each SAE's directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / SET_FILE, {"format": SET_FORMAT, "sites": list(sites)})
    return set_member_directories(directory, sites)


def set_member_directories(directory: str | Path, sites: Sequence[str]) -> dict[str, Path]:
    """Where each site's SAE lives in a set directory: a directory named after the site."""
    return {name: Path(directory) / name for name in sites}


def sae_set_members(path: str | Path) -> dict[str, Path]:
    """The SAE directory of each site of a set directory, by site name in forward order; {} for any other path."""
    listing_path = Path(path) / SET_FILE
    if not listing_path.is_file():
        return {}
    listing = read_json(listing_path)
    sites = listing.get("sites")
    if listing.get("format") != SET_FORMAT or not isinstance(sites, list) or not sites:
        raise SAEFormatError(f"{listing_path}: not a {SET_FORMAT} listing")
    return set_member_directories(path, sites)


# --- reports -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAEReports:
    """What the runs that made an SAE wrote beside it, with NaN and infinities as None (JSON columns refuse them)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    """metrics.json, or empty when no evaluation was saved."""
    training_log: list[dict[str, Any]] = field(default_factory=list)
    """training_log.jsonl's lines, or empty for an SAE trained elsewhere."""


def write_metrics(directory: str | Path, metrics: dict) -> Path:
    """metrics.json beside an SAE, merged over what is there (reconstruction and CE come from separate runs)."""
    path = Path(directory) / METRICS_FILE
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}  # a torn or foreign file is replaced; the figures in it are recomputed anyway
    atomic_write_json(path, {**old, **metrics})
    return path


def read_reports(directory: Path) -> SAEReports:
    """Evaluation metrics (metrics.json) and training log (training_log.jsonl) beside an SAE, if written."""
    metrics_path, log_path = directory / METRICS_FILE, directory / LOG_FILE
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.is_file() else []
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt report beside the SAE in {directory}: {err}") from None
    return SAEReports(_finite(metrics), [_finite(entry) for entry in log])


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (which JSON columns reject) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class TrainingLog:
    """training_log.jsonl; on resume, lines past the checkpoint are dropped (they will recur)."""

    def __init__(self, directory: Path, keep_through_step: int):
        self.path = directory / LOG_FILE
        lines = self.path.read_text().splitlines() if self.path.is_file() and keep_through_step else []
        kept = [line for line in lines if (step := _step_of(line)) is not None and step <= keep_through_step]
        text = "".join(f"{line}\n" for line in kept)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _step_of(line: str) -> int | None:
    """The step of a log line, None for a torn or foreign line."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
