"""Evaluation metrics and training log written beside an SAE, read for the store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..evaluate import METRICS_FILE
from ..train import LOG_FILE


def read_sae_reports(sae_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluation metrics (metrics.json) and training log (training_log.jsonl) beside an SAE, if written."""
    metrics_path, log_path = sae_dir / METRICS_FILE, sae_dir / LOG_FILE
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.is_file() else []
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt report beside the SAE in {sae_dir}: {err}") from None
    return _finite(metrics), [_finite(entry) for entry in log]


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (which JSON columns reject) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
