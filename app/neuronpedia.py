"""An SAE's recorded features as a Neuronpedia dataset: the one module that names and writes its files.

Neuronpedia's importer (apps/webapp/app/api/admin/import/route.ts and lib/db/import.ts) reads
`<modelId>/<sourceId>/` and needs, besides the batches, one row each of Model, SourceSet and Source:

    <out>/<modelId>/<sourceId>/model.jsonl, sourceset.jsonl, source.jsonl   created through Prisma, only if absent
    <out>/<modelId>/<sourceId>/features/batch-N.jsonl.gz                    Neuron rows
    <out>/<modelId>/<sourceId>/activations/batch-N.jsonl.gz                 Activation rows
    <out>/<modelId>/<sourceId>/explanations/batch-N.jsonl.gz                Explanation rows

The batch files go through one INSERT ... SELECT FROM jsonb_to_recordset ... ON CONFLICT DO NOTHING each,
whose column list is the keys of the file's first line: so every row of a file carries the same keys, and
Activation and Explanation rows carry a stable `id` (a hash of their content) for a repeated import to skip
them. Its S3 listing stops at 1,000 files a folder, hence 1,024 features a batch. `<sourceId>` is
`<layer>-<sourceSet>`, which is how Neuronpedia splits a source id into its layer and its set.
tests/app/test_neuronpedia_import.py imports an export into Neuronpedia's own schema (its migrations, vendored).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from sae_core.records.histogram import equal_width, mass_between
from sae_core.sites import parse_site

from . import crud
from .models import Sae, as_utc

FEATURES_PER_BATCH = 1024
"""Features a batch: the importer lists at most 1,000 files a folder, so 1,024 x 1,000 features at most."""
MAX_BATCHES = 1000
FREQ_HIST_BINS = 50
"""Equal-width bars of the activation histogram, as in Neuronpedia's own datasets."""
BOT_USER_ID = "clkht01d40000jv08hvalcvly"
"""The `bot` user Neuronpedia's seed (apps/webapp/prisma/seed.ts) creates as the creator of imported data."""
VISIBILITIES = ("PUBLIC", "UNLISTED", "PRIVATE")
"""Neuronpedia's Visibility enum; the schema defaults to PRIVATE, so it is always written explicitly."""
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,128}$")
"""Neuronpedia's rule for a model id (letters, digits, `-`, `_`, lower-cased); held to for source sets too."""


@dataclass(frozen=True)
class NeuronpediaTarget:
    """Where on a Neuronpedia instance the export goes, and as whom."""

    model_id: str
    """Neuronpedia's id of the model (e.g. `gpt2-small`); a hub id's slug is usually not it."""
    model_layers: int
    """The model's number of layers (Model.layers; the importer skips the Model row if the id exists)."""
    source_set: str = ""
    """The source set (e.g. `res-jb`); empty: a slug of the SAE's name."""
    model_owner: str = ""
    """Model.owner; empty: the organisation of a hub id, else `unknown`."""
    creator_id: str = BOT_USER_ID
    """A user id of the target instance, creator of the model, set, source, features and activations."""
    author_id: str = BOT_USER_ID
    """A user id of the target instance, author of the exported labels."""
    creator_name: str = "saescope"
    """SourceSet.creatorName, shown as the set's author."""
    visibility: str = "PUBLIC"
    """One of VISIBILITIES, for the model, the set and the source."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.model_id):
            raise ValueError(f"--model-id {self.model_id!r} must be 1-128 lower-case letters, digits, '-' or '_'")
        if self.source_set and not NAME_PATTERN.match(self.source_set):
            raise ValueError(f"--source-set {self.source_set!r} must be 1-128 lower-case letters, digits, '-' or '_'")
        if self.model_layers <= 0:
            raise ValueError(f"--model-layers must be positive, got {self.model_layers}")
        if self.visibility not in VISIBILITIES:
            raise ValueError(f"--visibility {self.visibility!r}: choose one of {', '.join(VISIBILITIES)}")
        for name, value in (("--creator-id", self.creator_id), ("--author-id", self.author_id)):
            if not value.strip():
                raise ValueError(f"{name} must name a user of the target instance")


@dataclass(frozen=True)
class Ids:
    """The ids every row of one export carries."""

    model_id: str
    source_id: str
    source_set: str
    creator_id: str


def write_neuronpedia(sae: Sae, pages: Iterable[crud.FeaturePage], out: Path, target: NeuronpediaTarget) -> Path:
    """Write the dataset under out/<modelId>/<sourceId>/ and return that directory; nothing if anything fails."""
    if math.ceil(sae.d_sae / FEATURES_PER_BATCH) > MAX_BATCHES:
        raise ValueError(f"{sae.d_sae} features need more than {MAX_BATCHES} batch files, "
                         "more than Neuronpedia's importer lists")
    ids = _ids(sae, target)
    final = out / ids.model_id / ids.source_id
    if final.exists() and any(final.iterdir()):
        raise ValueError(f"{final} already holds files: remove it or choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        _write_metadata(staging, sae, ids, target)
        for number, batch in enumerate(_batches(pages)):
            _write_batch(staging, number, sae, ids, target, batch)
        if final.exists():
            final.rmdir()
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _ids(sae: Sae, target: NeuronpediaTarget) -> Ids:
    source_set = target.source_set or _slug(sae.name)
    layer = parse_site(sae.site).layer if sae.site else 0
    return Ids(target.model_id, f"{layer}-{source_set}", source_set, target.creator_id)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:128] or "sae"


def _batches(pages: Iterable[crud.FeaturePage]) -> Iterator[list[crud.FeaturePage]]:
    batch: list[crud.FeaturePage] = []
    for page in pages:
        batch.append(page)
        if len(batch) == FEATURES_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# --- model.jsonl, sourceset.jsonl, source.jsonl ------------------------------------------------------


def _write_metadata(directory: Path, sae: Sae, ids: Ids, target: NeuronpediaTarget) -> None:
    """The three rows the importer creates through Prisma: only schema fields, every required one."""
    owner = target.model_owner or (sae.model_spec.split("/")[0] if "/" in sae.model_spec else "unknown")
    model = {"id": ids.model_id, "displayName": sae.model_name, "displayNameShort": sae.model_name,
             "creatorId": ids.creator_id, "layers": target.model_layers, "neuronsPerLayer": sae.d_in,
             "dimension": sae.d_in, "owner": owner, "visibility": target.visibility}
    source_set = {"modelId": ids.model_id, "name": ids.source_set, "visibility": target.visibility,
                  "description": f"{sae.name}: {sae.architecture} SAE, {sae.d_sae} features at {sae.site}",
                  "type": "sae", "creatorName": target.creator_name, "creatorId": ids.creator_id, "urls": []}
    source = {"id": ids.source_id, "modelId": ids.model_id, "setName": ids.source_set,
              "creatorId": ids.creator_id, "visibility": target.visibility, "hasDashboards": True,
              "num_prompts": sae.n_contexts, "dataset": sae.dataset}
    for name, row in (("model", model), ("sourceset", source_set), ("source", source)):
        (directory / f"{name}.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")


# --- batches -------------------------------------------------------------------------------------


def _write_batch(directory: Path, number: int, sae: Sae, ids: Ids, target: NeuronpediaTarget,
                 pages: list[crud.FeaturePage]) -> None:
    """One batch-N.jsonl.gz per folder; a folder gets none for a batch without rows (the importer would fail
    on an empty file)."""
    parts = {
        "features": [_feature(ids, sae, p) for p in pages],
        "activations": [a for p in pages for a in _activations(ids, sae, p)],
        "explanations": [e for p in pages if (e := _explanation(ids, target, p)) is not None],
    }
    for folder, rows in parts.items():
        if not rows:
            continue
        (directory / folder).mkdir(exist_ok=True)
        with gzip.open(directory / folder / f"batch-{number}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)


def _feature(ids: Ids, sae: Sae, page: crud.FeaturePage) -> dict[str, Any]:
    f = page.feature
    centres, heights = equal_width(f.hist.get("edges", []), f.hist.get("counts", []), f.max_act, FREQ_HIST_BINS)
    return {
        "modelId": ids.model_id, "layer": ids.source_id, "index": str(f.feature_index),
        "sourceSetName": ids.source_set, "creatorId": ids.creator_id, "hookName": sae.hook_name or None,
        "maxActApprox": f.max_act, "frac_nonzero": f.density,
        "pos_str": [t[1] for t in f.promoted], "pos_values": [t[2] for t in f.promoted],
        "neg_str": [t[1] for t in f.suppressed], "neg_values": [t[2] for t in f.suppressed],
        "topkCosSimIndices": [n[0] for n in f.neighbours], "topkCosSimValues": [n[1] for n in f.neighbours],
        "freq_hist_data_bar_values": centres, "freq_hist_data_bar_heights": heights,
    }


def _activations(ids: Ids, sae: Sae, page: crud.FeaturePage) -> Iterator[dict[str, Any]]:
    """Top examples (binMin -1, binMax the max, binContains -1, Neuronpedia's mark of a top row), then the
    quantile samples with their interval and the share of all tokens inside it."""
    top = page.feature.max_act
    for e in page.top:
        yield _activation(ids, sae, page, e, (-1.0, top, -1.0))
    for interval, group in page.quantiles.items():
        bounds = page.interval_bounds(interval)
        assert bounds is not None  # quantile samples exist only where the recording names intervals
        share = _share(page, sae, bounds, last=interval == page.n_intervals - 1)
        for e in group:
            yield _activation(ids, sae, page, e, (*bounds, share))


def _share(page: crud.FeaturePage, sae: Sae, bounds: tuple[float, float], last: bool) -> float:
    """Estimated fraction of all recorded tokens whose activation lies in `bounds` (sae_core.records.histogram)."""
    f = page.feature
    high = math.inf if last else bounds[1]
    mass = mass_between(f.hist.get("edges", []), f.hist.get("counts", []), bounds[0], high, f.max_act)
    return mass / max(sae.n_tokens or 0, 1)


def _activation(ids: Ids, sae: Sae, page: crud.FeaturePage, e: crud.ExampleView,
                bins: tuple[float, float, float]) -> dict[str, Any]:
    peak = max(e.acts)
    row = {
        "modelId": ids.model_id, "layer": ids.source_id, "index": str(page.feature.feature_index),
        "creatorId": ids.creator_id, "tokens": e.pieces, "values": e.acts, "maxValue": peak,
        "maxValueTokenIndex": e.acts.index(peak), "minValue": min(e.acts),
        "dataIndex": str(e.context_index), "dataSource": sae.dataset,
        "binMin": bins[0], "binMax": bins[1], "binContains": bins[2],
    }
    return {"id": _stable_id("act", row), **row}


def _explanation(ids: Ids, target: NeuronpediaTarget, page: crud.FeaturePage) -> dict[str, Any] | None:
    """The feature's current label; its source and author in `notes` (names this store knows, not the target)."""
    if not page.labels:
        return None
    label = page.labels[0]
    by = f" by {label.author_name}" if label.author_name else ""
    row = {
        "modelId": ids.model_id, "layer": ids.source_id, "index": str(page.feature.feature_index),
        "description": label.text, "authorId": target.author_id, "typeName": None,
        "explanationModelName": None, "notes": f"saescope label ({label.source}{by})",
        "createdAt": as_utc(label.created_at).astimezone(UTC).replace(tzinfo=None).isoformat(),
    }
    return {"id": _stable_id("exp", {k: row[k] for k in ("modelId", "layer", "index", "description")}), **row}


def _stable_id(kind: str, row: dict[str, Any]) -> str:
    """A content hash, so a repeated import (ON CONFLICT DO NOTHING on the id) adds nothing."""
    digest = hashlib.blake2b(json.dumps([kind, row], sort_keys=True).encode(), digest_size=12).hexdigest()
    return f"sx{digest}"
