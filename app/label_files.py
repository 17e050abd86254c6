"""Labels in and out of the store as CSV or JSON files (the whole append-only history on export).

CSV cells that a spreadsheet would run as a formula (=, +, -, @ at the start) get a leading apostrophe:
label text is user content, and exports must not turn it into code anywhere they are opened.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .deps import storable
from .models import Explanation, Label

COLUMNS = ("feature_index", "label", "author", "source", "created_at", "explainer_model", "scorer_model",
           "prompt_version", "detection", "fuzzing")
"""The last five are filled for a label accepted or edited from a draft explanation (its origin)."""
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LabelFileError(ValueError):
    """An import file that is not labels in either format; the message says where it went wrong."""


@dataclass(frozen=True)
class ImportedLabel:
    feature_index: int
    text: str


def label_rows(labels: list[Label], origins: Mapping[int, Explanation] | None = None) -> list[dict[str, Any]]:
    """One row per label version; `origins` maps a label's id to the draft it was accepted or edited from."""
    origins = origins or {}
    return [{"feature_index": lab.feature_index, "label": lab.text, "author": lab.author_name or "",
             "source": lab.source, "created_at": lab.created_at.isoformat(), **_origin(origins.get(lab.id))}
            for lab in labels]


def _origin(draft: Explanation | None) -> dict[str, Any]:
    if draft is None:
        return dict.fromkeys(COLUMNS[5:], "")
    scores = draft.scores or {}
    return {"explainer_model": draft.explainer_model, "scorer_model": draft.scorer_model,
            "prompt_version": draft.prompt_version,
            **{name: scores[name]["accuracy"] if name in scores else "" for name in ("detection", "fuzzing")}}


def _cell(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def to_csv(labels: list[Label], origins: Mapping[int, Explanation] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in label_rows(labels, origins))
    return out.getvalue()


def to_json(sae_name: str, labels: list[Label], origins: Mapping[int, Explanation] | None = None) -> str:
    return json.dumps({"sae": sae_name, "labels": label_rows(labels, origins)}, ensure_ascii=False, indent=1)


def parse(content: bytes, filename: str) -> list[ImportedLabel]:
    """Labels from a CSV or JSON file (chosen by extension, else by the first character)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelFileError("the file is not UTF-8 text") from None
    is_json = filename.lower().endswith(".json") or text.lstrip().startswith(("{", "["))
    rows = _json_rows(text) if is_json else list(csv.DictReader(io.StringIO(text)))
    return [_imported(row, n) for n, row in enumerate(rows, start=1)]


def _json_rows(text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelFileError(f"not valid JSON: {err}") from None
    rows = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise LabelFileError('JSON labels must be a list, or an object with a "labels" list')
    return rows


def _imported(row: Any, n: int) -> ImportedLabel:
    """One row: a feature_index and a label (an apostrophe that export added before a formula is dropped)."""
    if not isinstance(row, dict) or "feature_index" not in row or "label" not in row:
        raise LabelFileError(f"row {n}: needs feature_index and label")
    try:
        index = int(row["feature_index"])
    except (TypeError, ValueError):
        raise LabelFileError(f"row {n}: feature_index {row['feature_index']!r} is not a whole number") from None
    text = str(row["label"] or "").strip()
    if text.startswith("'") and text[1:].startswith(FORMULA_START):
        text = text[1:]
    if not text:
        raise LabelFileError(f"row {n}: the label is empty")
    try:
        return ImportedLabel(index, storable(text))
    except ValueError as err:
        raise LabelFileError(f"row {n}: the label {err}") from None
