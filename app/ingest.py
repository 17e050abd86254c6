"""The one bridge from sae_core records to rows: replaces an SAE's recorded data in one transaction.

Everything (deleting the old recording and inserting the new one) happens inside a single
transaction, so a record that fails or is interrupted half-way leaves the previous data whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from itertools import repeat
from typing import Any

import numpy as np
import torch
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from sae_core.maps import DEAD, ClusterSummary, FeatureMap
from sae_core.records import SAERecord
from sae_core.records.directions import TopTable
from sae_core.records.sae_record import HIST_EDGES

from .bulk import JsonText, Writer, copy_rows, import_cache
from .crud import index_top_texts
from .models import Coactivation, Context, Example, Feature, FeatureMapRun, MapCluster, MapPoint, Sae, TokenText, now
from .packing import pack_acts, pack_ids


class IngestError(ValueError):
    """A record that does not fit the SAE it is stored under."""


def store_record(session: Session, *, sae_id: int, record: SAERecord, dataset: str, writer: Writer = copy_rows) -> None:
    """Replace the recorded features of SAE `sae_id` with `record`, atomically; `writer` puts the rows in
    (bulk.insert_rows is the slow reference the fast default is tested equal to)."""
    sae = session.get(Sae, sae_id)
    if sae is None:
        raise IngestError(f"no SAE with id {sae_id} in the store")
    if record.d_sae != sae.d_sae:
        raise IngestError(f"record has {record.d_sae} features but SAE {sae.name!r} has {sae.d_sae}")
    try:
        with import_cache(session):
            _delete_recording(session, sae_id)
            feature_ids = _insert_features(session, sae_id, record, writer)
            context_ids, context_of_E = _insert_contexts(session, sae_id, record, writer)
            _insert_examples(session, record, feature_ids, context_ids[context_of_E], writer)
            writer(session, TokenText, ("sae_id", "token_id", "text"),
                   ((sae_id, t, text) for t, text in record.token_text.items()))
            writer(session, Coactivation, ("sae_id", "feature_index", JsonText("partners")),
                   _coactivation_rows(sae_id, record))
            _update_summary(sae, record, dataset)
            session.commit()
    except BaseException:
        session.rollback()
        raise
    refresh_statistics(session)


def refresh_statistics(session: Session) -> None:
    """Update the planner's statistics after a bulk replace, so feature pages are read through the indexes.

    PostgreSQL's autovacuum analyses the tables only some time later, and meanwhile plans from stale
    statistics; SQLite's `PRAGMA optimize` analyses what needs it.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE features, contexts, examples"))
    else:
        session.execute(text("PRAGMA optimize"))
    session.commit()


def _delete_recording(session: Session, sae_id: int) -> None:
    """Remove the previous recording's rows (inside the caller's transaction)."""
    features = select(Feature.id).where(Feature.sae_id == sae_id)
    session.execute(delete(Example).where(Example.feature_id.in_(features)))
    session.execute(delete(Feature).where(Feature.sae_id == sae_id))
    session.execute(delete(Context).where(Context.sae_id == sae_id))
    session.execute(delete(TokenText).where(TokenText.sae_id == sae_id))
    session.execute(delete(Coactivation).where(Coactivation.sae_id == sae_id))


FEATURE_COLUMNS = ("sae_id", "feature_index", "density", "fire_count", "max_act", "mean_act", "is_dead", "is_dense",
                   JsonText("hist"), JsonText("promoted"), JsonText("suppressed"), JsonText("neighbours"), "top_text")


def _insert_features(session: Session, sae_id: int, record: SAERecord, writer: Writer) -> np.ndarray:
    """Insert one row per feature, its top text into the search index too; returns row ids indexed by feature
    index."""
    writer(session, Feature, FEATURE_COLUMNS, _feature_rows(sae_id, record))
    index_top_texts(session, sae_id=sae_id)
    ids = np.zeros(record.d_sae, dtype=np.int64)
    rows = session.connection().execute(select(Feature.feature_index, Feature.id).where(Feature.sae_id == sae_id)).all()
    index_R, id_R = zip(*rows) if record.d_sae else ((), ())  # .all(): one fetchall, not a fetch per row
    ids[np.array(index_R, dtype=np.int64)] = id_R
    return ids


def _feature_rows(sae_id: int, record: SAERecord) -> Iterator[tuple[Any, ...]]:
    """Feature rows (FEATURE_COLUMNS); their JSON columns are written as text straight from the record's column
    tensors (`_pairs_json`): building and dumping lists of lists took most of a million-feature import."""
    text = record.token_text
    density = record.density_F.tolist()
    count, max_, mean = record.count_F.tolist(), record.max_F.tolist(), record.mean_F.tolist()
    token_json = {t: json.dumps([t, text.get(t, "")])[:-1] + ", " for t in _token_ids(record)}
    promoted = _pairs_json(record.promoted, token_json)
    suppressed = _pairs_json(record.suppressed, token_json)
    neighbour_ids = {i: f"[{i}, " for i in set(record.neighbours.index_FK.flatten().tolist())}
    neighbours = _pairs_json(record.neighbours, neighbour_ids)
    k = record.promoted.index_FK.shape[1]
    promoted_text = [text.get(t, "") for t in record.promoted.index_FK.flatten().tolist()]  # one list, not F: the
    peaks = _top_peak_texts(record)  # garbage collector scans every list that lives through the import
    dense = record.config.dense_density
    for i, (hist, promoted_i, suppressed_i, neighbours_i) in enumerate(
            zip(_feature_hists(record), promoted, suppressed, neighbours)):
        yield (sae_id, i, density[i], count[i], max_[i], mean[i], count[i] == 0, density[i] > dense, hist,
               promoted_i, suppressed_i, neighbours_i,
               " ".join(dict.fromkeys(peaks.get(i, []) + promoted_text[i * k:(i + 1) * k])))


def _token_ids(record: SAERecord) -> set[int]:
    """Every token id the logit tables name (a set of Python ints: torch.unique sorts, which costs more)."""
    return set(record.promoted.index_FK.flatten().tolist()) | set(record.suppressed.index_FK.flatten().tolist())


PAIRS_CHUNK = 65536
"""Features whose logit or neighbour values are formatted by one json.dumps call (C speed, bounded memory)."""


def _pairs_json(table: TopTable, prefix: dict[int, str], *, skip_negative: bool = False) -> Iterator[str]:
    """Per feature, the JSON text of [[*prefix of index, value], ...] (prefix[i] opens a pair and ends in ", "),
    without the pairs of negative (padding) indices if `skip_negative`. The values of a chunk of features are
    formatted by one json.dumps, and the chunk's text is interleaved, joined and cut into features by C-level
    list, array and string operations, never a Python step per feature or value: at a million features those
    steps were most of an import. The cut is at newlines, which json.dumps never writes. Chunks are formatted
    as the features are asked for, so memory holds one chunk's text, not a million features'."""
    n, k = table.index_FK.shape
    if k == 0:
        yield from ["[]"] * n
        return
    for ids_CK, values_CK in zip(table.index_FK.split(PAIRS_CHUNK), table.value_FK.split(PAIRS_CHUNK)):
        heads = [prefix[i] for i in ids_CK.flatten().tolist()]
        numbers = json_numbers(values_CK.flatten())
        if skip_negative:
            ends_CK = np.full(ids_CK.shape, "], ", dtype=object)
            kept_CK = ids_CK.numpy() >= 0
            heads, numbers = (_blanked(texts, ~kept_CK.ravel()) for texts in (heads, numbers))
            ends_CK[~kept_CK] = ""
            any_F = kept_CK.any(axis=1)
            last_F = k - 1 - kept_CK[:, ::-1].argmax(axis=1)
            ends_CK[any_F, last_F[any_F]] = "]]\n["
            ends_CK[~any_F, 0] = "]\n["  # no pair kept: "[" + "]"
            ends = ends_CK.ravel().tolist()
        else:
            ends = (["], "] * (k - 1) + ["]]\n["]) * ids_CK.shape[0]
        parts: list[str] = [""] * (3 * len(heads))
        parts[0::3] = heads
        parts[1::3] = numbers
        parts[2::3] = ends
        yield from ("[" + "".join(parts))[:-2].split("\n")


def json_numbers(values: torch.Tensor) -> list[str]:
    """Each value as JSON number text with the digits its dtype holds: 9 significant digits give a float32
    (bfloat16, float16) back exactly, and formatting them took 0.6 of the time (and 0.65 of the bytes) of the
    17-digit repr of its float64 widening. As json.dumps does, integral values keep a ".0" (so they read back as
    floats, -0.0 with its sign) and non-finite ones are written NaN, Infinity, -Infinity."""
    digits = 17 if values.dtype == torch.float64 else 9
    floats = values.tolist()
    numbers = list(map(f"{{:.{digits}g}}".format, floats))
    finite = torch.isfinite(values)
    integral = finite & (values == values.trunc()) & (values.abs() < 10.0**digits)  # "g" writes these bare
    for i in integral.nonzero().flatten().tolist():  # the zeros that pad a partner table: many
        numbers[i] += ".0"
    for i in (~finite).nonzero().flatten().tolist():
        numbers[i] = json.dumps(floats[i])
    return numbers


def _blanked(texts: list[str], blank: np.ndarray) -> list[str]:
    """`texts` with "" where `blank` is true."""
    array = np.array(texts, dtype=object)
    array[blank] = ""
    return array.tolist()


def _feature_hists(record: SAERecord) -> Iterator[str]:
    """`record.feature_hist(i)` as {"edges": [...], "counts": [...]} JSON for every feature in turn, the occupied
    spans found for all features at once (per feature, the tensor calls cost more than the rest of its row)."""
    hist_FB = record.hist_FB.numpy()
    occupied_FB = hist_FB > 0
    n_bins = hist_FB.shape[1]
    lo_F = occupied_FB.argmax(axis=1).tolist()
    hi_F = (n_bins - occupied_FB[:, ::-1].argmax(axis=1)).tolist()
    empty_F = np.logical_not(occupied_FB.any(axis=1)).tolist()
    edges = json.dumps(HIST_EDGES.tolist())[1:-1].split(", ")
    for i, (lo, hi) in enumerate(zip(lo_F, hi_F)):
        if empty_F[i]:
            yield '{"edges": [], "counts": []}'
        else:
            counts = ", ".join(map(str, hist_FB[i, lo:hi].tolist()))
            yield f'{{"edges": [{", ".join(edges[lo : hi + 1])}], "counts": [{counts}]}}'


def _coactivation_rows(sae_id: int, record: SAERecord) -> Iterator[tuple[Any, ...]]:
    """One row per feature that fired with any other: [[feature_index, jaccard], ...] best first (negative
    indices pad the table)."""
    if record.coactive is None:
        return
    index_FK = record.coactive.index_FK
    partner_ids = {j: f"[{j}, " for j in set(index_FK.flatten().tolist())}
    features = (index_FK >= 0).any(dim=1).nonzero().flatten()  # only these are formatted
    table = TopTable(index_FK[features], record.coactive.value_FK[features])
    yield from zip(repeat(sae_id), features.tolist(), _pairs_json(table, partner_ids, skip_negative=True))


def _top_peak_texts(record: SAERecord) -> dict[int, list[str]]:
    """Text of the peak token of each top example, per feature, for search."""
    ex = record.examples
    top = (ex.interval_E < 0).nonzero().flatten()
    peak_ids = ex.tokens_EW[top, ex.peak_E[top]].tolist()
    out: dict[int, list[str]] = {}
    for feature, token in zip(ex.feature_E[top].tolist(), peak_ids):
        out.setdefault(feature, []).append(record.token_text.get(token, "").strip())
    return out


def _insert_contexts(session: Session, sae_id: int, record: SAERecord, writer: Writer) -> tuple[np.ndarray, np.ndarray]:
    """Store each distinct window once; returns (row id per distinct window, window number per example)."""
    ex = record.examples
    keys_E2 = np.stack([ex.context_E.numpy(), ex.start_E.numpy()], axis=1)
    keys_U2, first_U, window_of_E = np.unique(keys_E2, axis=0, return_index=True, return_inverse=True)
    tokens_UW = ex.tokens_EW.numpy()[first_U]
    text = record.token_text
    rows = ((sae_id, c, s, pack_ids(tokens_UW[u]), [text.get(t, "") for t in tokens_UW[u].tolist()])
            for u, (c, s) in enumerate(keys_U2.tolist()))
    writer(session, Context, ("sae_id", "context_index", "start", "token_ids", "pieces"), rows)
    lookup = {(c, s): row_id for row_id, c, s in session.connection().execute(
        select(Context.id, Context.context_index, Context.start).where(Context.sae_id == sae_id)).all()}
    ids_U = np.array([lookup[(c, s)] for c, s in keys_U2.tolist()], dtype=np.int64)
    return ids_U, window_of_E.reshape(-1)


def _insert_examples(session: Session, record: SAERecord, feature_ids: np.ndarray, context_id_E: np.ndarray,
                     writer: Writer) -> None:
    """One row per example with its float16 activations packed."""
    ex = record.examples
    interval_E = [None if i < 0 else i for i in ex.interval_E.tolist()]
    acts = pack_acts(ex.acts_EW.numpy())
    width = len(acts) // max(len(interval_E), 1)
    rows = zip(feature_ids[ex.feature_E.numpy()].tolist(), context_id_E.tolist(), interval_E, ex.rank_E.tolist(),
               ex.peak_E.tolist(), ex.value_E.tolist(), (acts[e * width:(e + 1) * width] for e in range(len(interval_E))))
    writer(session, Example, ("feature_id", "context_id", "interval", "rank", "peak", "value", "acts"), rows)


def _update_summary(sae: Sae, record: SAERecord, dataset: str) -> None:
    """Per-SAE figures of this recording."""
    edges, counts = record.density_histogram()
    sae.recorded_at = now()
    sae.dataset = dataset
    sae.n_tokens = record.n_tokens
    sae.n_contexts = record.n_contexts
    sae.record_config = asdict(record.config)
    sae.density_histogram = {"log10_edges": edges, "counts": counts}
    sae.dead_count = record.dead_count
    sae.dense_count = record.dense_count
    sae.mean_l0 = float(record.count_F.sum()) / max(record.n_tokens, 1)


def store_map(session: Session, *, sae_id: int, fmap: FeatureMap, clusters: list[ClusterSummary], seconds: float) -> None:
    """Replace SAE `sae_id`'s feature map (run, points, clusters) with `fmap`, atomically."""
    sae = session.get(Sae, sae_id)
    if sae is None:
        raise IngestError(f"no SAE with id {sae_id} in the store")
    if len(fmap.cluster_F) != sae.d_sae:
        raise IngestError(f"map has {len(fmap.cluster_F)} features but SAE {sae.name!r} has {sae.d_sae}")
    try:
        for table in (MapPoint, MapCluster, FeatureMapRun):
            session.execute(delete(table).where(table.sae_id == sae_id))
        copy_rows(session, MapPoint, ("sae_id", "feature_index", "x", "y", "cluster"),
                  _map_point_rows(sae_id, fmap))
        copy_rows(session, MapCluster, ("sae_id", "cluster", "size", "x", "y", "top_tokens"),
                  ((sae_id, c.cluster, c.size, c.x, c.y, [list(t) for t in c.top_tokens]) for c in clusters))
        session.add(FeatureMapRun(sae_id=sae_id, config=fmap.config.to_dict(), membership=membership_key(fmap),
                                  n_clusters=fmap.n_clusters, n_noise=fmap.n_noise, n_dead=fmap.n_dead, seconds=seconds))
        session.commit()
    except BaseException:
        session.rollback()
        raise


def membership_key(fmap: FeatureMap) -> str:
    """A short hash of every feature's cluster: equal for maps whose clusters hold the same features."""
    return hashlib.sha256(np.ascontiguousarray(fmap.cluster_F, dtype="<i8").tobytes()).hexdigest()[:16]


def _map_point_rows(sae_id: int, fmap: FeatureMap) -> Iterator[tuple[Any, ...]]:
    """One row per feature: NULL position for dead features, NULL cluster for those in none."""
    x, y, cluster = fmap.x_F.tolist(), fmap.y_F.tolist(), fmap.cluster_F.tolist()
    for i in range(len(cluster)):
        dead = cluster[i] == DEAD
        yield sae_id, i, None if dead else x[i], None if dead else y[i], cluster[i] if cluster[i] >= 0 else None
