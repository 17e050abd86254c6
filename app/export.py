"""Write an SAE's recorded features and labels out of the store: a Neuronpedia dataset (app/neuronpedia.py),
or plain JSON (sae.json and features.jsonl, written here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import crud
from .models import Feature, Sae
from .neuronpedia import NeuronpediaTarget, write_neuronpedia

FORMATS = ("neuronpedia", "json")


def export_sae(session: Session, *, sae_ref: str | int, fmt: str, out: Path,
               target: NeuronpediaTarget | None = None) -> Path:
    """Export one SAE under directory `out` in format `fmt`; returns the directory written.

    The neuronpedia format needs `target` (Neuronpedia's model id and the rest) and writes out/<model>/<source>/.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    sae = crud.find_sae(session, ref=sae_ref)
    if sae.recorded_at is None:
        raise ValueError(f"SAE {sae.name!r} has not been recorded yet: run saescope record first")
    if fmt == "neuronpedia" and target is None:
        raise ValueError("the neuronpedia format needs --model-id and --model-layers (Neuronpedia's id of the model "
                         "and its number of layers)")
    out.mkdir(parents=True, exist_ok=True)
    pages = _pages(session, sae)
    if target is not None and fmt == "neuronpedia":
        return write_neuronpedia(sae, pages, out, target)
    _write_json(sae, pages, out)
    return out


def _pages(session: Session, sae: Sae) -> Iterator[crud.FeaturePage]:
    """Every feature page of the SAE, in index order."""
    indices = session.scalars(select(Feature.feature_index).where(Feature.sae_id == sae.id).order_by(Feature.feature_index))
    for index in list(indices):
        yield crud.feature_page(session, sae_id=sae.id, feature_index=index)


def _write_json(sae: Sae, pages: Iterator[crud.FeaturePage], out: Path) -> None:
    """sae.json (the SAE and its recording summary) and features.jsonl (one feature page per line)."""
    columns = ("name", "model_name", "model_spec", "site", "hook_name", "architecture", "d_in", "d_sae", "k",
               "source_format", "config", "eval_metrics", "training_log", "dataset", "n_tokens", "n_contexts",
               "record_config", "density_histogram", "dead_count", "dense_count", "mean_l0")
    summary = {c: getattr(sae, c) for c in columns} | {"recorded_at": sae.recorded_at and sae.recorded_at.isoformat()}
    (out / "sae.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    with open(out / "features.jsonl", "w", encoding="utf-8") as f:
        for page in pages:
            f.write(json.dumps(_json_feature(page), ensure_ascii=False) + "\n")


def _json_feature(page: crud.FeaturePage) -> dict[str, Any]:
    f = page.feature
    return {
        "index": f.feature_index, "density": f.density, "max_act": f.max_act, "mean_act": f.mean_act,
        "is_dead": f.is_dead, "is_dense": f.is_dense, "hist": f.hist, "promoted": f.promoted,
        "suppressed": f.suppressed, "neighbours": f.neighbours,
        "top": [_json_example(e) for e in page.top],
        "quantiles": {str(i): [_json_example(e) for e in group] for i, group in page.quantiles.items()},
        "labels": [{"text": lab.text, "source": lab.source, "author": lab.author_name,
                    "created_at": lab.created_at.isoformat()} for lab in page.labels],
        "tags": page.tags,
    }


def _json_example(e: crud.ExampleView) -> dict[str, Any]:
    return {"context": e.context_index, "start": e.start, "peak": e.peak, "value": e.value,
            "token_ids": e.token_ids, "tokens": e.pieces, "acts": e.acts}
