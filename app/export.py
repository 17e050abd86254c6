"""Write an SAE's recorded features and labels out of the store: Neuronpedia batch JSONL, or plain JSON.

The Neuronpedia layout mirrors its bulk exports: features/, activations/ and explanations/ each hold
batch-N.jsonl.gz files, one JSON object per line, with Neuronpedia's field names (modelId, layer, index,
maxActApprox, pos_str/pos_values, tokens/values...). `layer` is Neuronpedia's source id, "<layer>-<sae name>".
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sae_core.sites import parse_site

from . import crud
from .crud.explanations import SaeExplanations, sae_explanations
from .models import Explanation, Feature, Sae

FORMATS = ("neuronpedia", "json")
FEATURES_PER_BATCH = 256


def export_sae(session: Session, *, sae_ref: str | int, fmt: str, out: Path) -> Path:
    """Export one SAE into directory `out` in format `fmt`; returns `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    sae = crud.find_sae(session, ref=sae_ref)
    if sae.recorded_at is None:
        raise ValueError(f"SAE {sae.name!r} has not been recorded yet: run saescope record first")
    out.mkdir(parents=True, exist_ok=True)
    pages = _pages(session, sae)
    if fmt == "neuronpedia":
        _write_neuronpedia(sae, pages, out, sae_explanations(session, sae_id=sae.id))
    else:
        _write_json(sae, pages, out)
    return out


def _pages(session: Session, sae: Sae) -> Iterator[crud.FeaturePage]:
    """Every feature page of the SAE, in index order."""
    indices = session.scalars(select(Feature.feature_index).where(Feature.sae_id == sae.id).order_by(Feature.feature_index))
    for index in list(indices):
        yield crud.feature_page(session, sae_id=sae.id, feature_index=index)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "sae"


def _source_id(sae: Sae) -> str:
    """Neuronpedia's source id for this SAE: layer number and SAE name."""
    layer = parse_site(sae.site).layer if sae.site else 0
    return f"{layer}-{_slug(sae.name)}"


def _write_neuronpedia(sae: Sae, pages: Iterator[crud.FeaturePage], out: Path, drafts: SaeExplanations) -> None:
    """features/, activations/, explanations/ as batch-N.jsonl.gz, FEATURES_PER_BATCH features each."""
    ids = {"modelId": _slug(sae.model_name), "layer": _source_id(sae)}
    batch: list[crud.FeaturePage] = []
    number = 0
    for page in pages:
        batch.append(page)
        if len(batch) == FEATURES_PER_BATCH:
            _write_batch(out, number, ids, sae, batch, drafts)
            batch, number = [], number + 1
    if batch:
        _write_batch(out, number, ids, sae, batch, drafts)


def _write_batch(out: Path, number: int, ids: dict[str, str], sae: Sae, pages: list[crud.FeaturePage],
                 drafts: SaeExplanations) -> None:
    parts = {
        "features": [_np_feature(ids, sae, p) for p in pages],
        "activations": [a for p in pages for a in _np_activations(ids, p)],
        "explanations": [e for p in pages for e in _np_explanations(ids, p, drafts)],
    }
    for folder, rows in parts.items():
        (out / folder).mkdir(exist_ok=True)
        with gzip.open(out / folder / f"batch-{number}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _np_feature(ids: dict[str, str], sae: Sae, page: crud.FeaturePage) -> dict[str, Any]:
    f = page.feature
    return {
        **ids,
        "index": str(f.feature_index),
        "hookName": sae.hook_name,
        "maxActApprox": f.max_act,
        "frac_nonzero": f.density,
        "pos_str": [t[1] for t in f.promoted],
        "pos_values": [t[2] for t in f.promoted],
        "neg_str": [t[1] for t in f.suppressed],
        "neg_values": [t[2] for t in f.suppressed],
        "topkCosSimIndices": [n[0] for n in f.neighbours],
        "topkCosSimValues": [n[1] for n in f.neighbours],
        "freq_hist_data_bar_values": _bin_centres(f.hist.get("edges", [])),
        "freq_hist_data_bar_heights": f.hist.get("counts", []),
    }


def _bin_centres(edges: list[float]) -> list[float]:
    """Geometric centres of log-spaced bins."""
    return [(lo * hi) ** 0.5 for lo, hi in itertools.pairwise(edges)]


def _np_activations(ids: dict[str, str], page: crud.FeaturePage) -> Iterator[dict[str, Any]]:
    examples = page.top + [e for group in page.quantiles.values() for e in group]
    for e in examples:
        row = {
            **ids,
            "index": str(page.feature.feature_index),
            "tokens": e.pieces,
            "values": e.acts,
            "maxValue": max(e.acts),
            "maxValueTokenIndex": e.acts.index(max(e.acts)),
            "minValue": min(e.acts),
            "dataIndex": str(e.context_index),
        }
        bounds = page.interval_bounds(e.interval) if e.interval is not None else None
        if bounds:
            row["binMin"], row["binMax"] = bounds
        yield row


def _np_explanations(ids: dict[str, str], page: crud.FeaturePage, drafts: SaeExplanations) -> Iterator[dict[str, Any]]:
    """Every label version, with the models and scores of the draft it came from, then the unverified draft."""
    for label in page.labels:
        origin = drafts.by_label.get(label.id)
        yield {
            **ids,
            "index": str(page.feature.feature_index),
            "description": label.text,
            "authorId": label.author_name or "",
            "typeName": f"saescope-{label.source}",
            "explanationModelName": origin.explainer_model if origin else ("" if label.source == "human" else label.source),
            "createdAt": label.created_at.isoformat(),
            **_np_scores(origin),
        }
    pending = drafts.pending.get(page.feature.feature_index)
    if pending is not None:
        yield {**ids, "index": str(page.feature.feature_index), "description": pending.text, "authorId": "",
               "typeName": "saescope-auto-unverified", "explanationModelName": pending.explainer_model,
               "createdAt": pending.created_at.isoformat(), **_np_scores(pending)}


def _np_scores(draft: Explanation | None) -> dict[str, Any]:
    """Neuronpedia's explanation scores: one per scorer method, with the scorer model."""
    if draft is None:
        return {}
    return {"scores": [{"explanationScoreTypeName": f"saescope-{name}", "explanationScoreModelName": draft.scorer_model,
                        "value": score["accuracy"], "jsonDetails": json.dumps(score)}
                       for name, score in (draft.scores or {}).items() if name in ("detection", "fuzzing")],
            "promptVersion": draft.prompt_version}


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
