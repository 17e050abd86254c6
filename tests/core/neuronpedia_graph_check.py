"""Neuronpedia's own rules for an uploaded attribution graph: its JSON Schema (vendored, see
tests/fixtures/neuronpedia_graph/README.md) and the checks its upload adds after it."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

SCHEMA = Path(__file__).parents[1] / "fixtures" / "neuronpedia_graph" / "graph-schema.json"
UPLOAD_NAME = re.compile(r"[^a-zA-Z0-9_.-]")
"""apps/webapp/app/api/graph/save-to-db/route.ts refuses a scan or slug holding any of these."""


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def upload_errors(graph: dict[str, Any]) -> list[str]:
    """What Neuronpedia's upload would say against this graph, `path: message` as it words them; [] if none."""
    errors = [f"{'/'.join(map(str, e.instance_path)) or 'root'}: {e.message}" for e in _validator().iter_errors(graph)]
    metadata = graph.get("metadata", {})
    for field in ("scan", "slug"):
        if UPLOAD_NAME.search(str(metadata.get(field, ""))):
            errors.append(f"metadata/{field}: invalid characters in {metadata[field]!r}")
    return errors
