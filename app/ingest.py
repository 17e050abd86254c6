"""The one bridge from sae_core records to rows: replaces an SAE's recorded data in one transaction.

Everything (deleting the old recording and inserting the new one) happens inside a single
transaction, so a record that fails or is interrupted half-way leaves the previous data whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session

from sae_core.maps import DEAD, ClusterSummary, FeatureMap
from sae_core.records import SAERecord

from .models import Coactivation, Context, Example, Feature, FeatureMapRun, MapCluster, MapPoint, Sae, TokenText, now
from .packing import pack_acts, pack_ids

BATCH_ROWS = 5000
"""Rows per executemany; large enough to amortise round trips, small enough to bound memory."""


class IngestError(ValueError):
    """A record that does not fit the SAE it is stored under."""


def store_record(session: Session, *, sae_id: int, record: SAERecord, dataset: str) -> None:
    """Replace the recorded features of SAE `sae_id` with `record`, atomically."""
    sae = session.get(Sae, sae_id)
    if sae is None:
        raise IngestError(f"no SAE with id {sae_id} in the store")
    if record.d_sae != sae.d_sae:
        raise IngestError(f"record has {record.d_sae} features but SAE {sae.name!r} has {sae.d_sae}")
    try:
        _delete_recording(session, sae_id)
        feature_ids = _insert_features(session, sae_id, record)
        context_ids, context_of_E = _insert_contexts(session, sae_id, record)
        _insert_examples(session, record, feature_ids, context_ids[context_of_E])
        _bulk_insert(session, TokenText, ({"sae_id": sae_id, "token_id": t, "text": text}
                                          for t, text in record.token_text.items()))
        _bulk_insert(session, Coactivation, _coactivation_rows(sae_id, record))
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


def _batches(rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Cut a row stream into executemany-sized lists."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _bulk_insert(session: Session, model: type, rows) -> None:
    for batch in _batches(rows):
        session.execute(insert(model), batch)


def _insert_features(session: Session, sae_id: int, record: SAERecord) -> np.ndarray:
    """Insert one row per feature; returns row ids indexed by feature index."""
    _bulk_insert(session, Feature, _feature_rows(sae_id, record))
    ids = np.zeros(record.d_sae, dtype=np.int64)
    for index, row_id in session.execute(select(Feature.feature_index, Feature.id).where(Feature.sae_id == sae_id)):
        ids[index] = row_id
    return ids


def _feature_rows(sae_id: int, record: SAERecord) -> Iterator[dict[str, Any]]:
    """Feature rows, with JSON columns built from the record's column tensors."""
    text = record.token_text
    density = record.density_F.tolist()
    count, max_, mean = record.count_F.tolist(), record.max_F.tolist(), record.mean_F.tolist()
    promoted, suppressed = _token_table(record.promoted, text), _token_table(record.suppressed, text)
    neighbours = [list(map(list, zip(i, v))) for i, v in
                  zip(record.neighbours.index_FK.tolist(), record.neighbours.value_FK.tolist())]
    peaks = _top_peak_texts(record)
    dense = record.config.dense_density
    for i in range(record.d_sae):
        edges, counts = record.feature_hist(i)
        yield {
            "sae_id": sae_id, "feature_index": i, "density": density[i], "fire_count": count[i],
            "max_act": max_[i], "mean_act": mean[i], "is_dead": count[i] == 0, "is_dense": density[i] > dense,
            "hist": {"edges": edges, "counts": counts}, "promoted": promoted[i], "suppressed": suppressed[i],
            "neighbours": neighbours[i],
            "top_text": " ".join(dict.fromkeys(peaks.get(i, []) + [p[1] for p in promoted[i]])),
        }


def _coactivation_rows(sae_id: int, record: SAERecord) -> Iterator[dict[str, Any]]:
    """One row per feature that fired with any other: [[feature_index, jaccard], ...] best first."""
    if record.coactive is None:
        return
    for i, (index, score) in enumerate(zip(record.coactive.index_FK.tolist(), record.coactive.value_FK.tolist())):
        partners = [[j, s] for j, s in zip(index, score) if j >= 0]
        if partners:
            yield {"sae_id": sae_id, "feature_index": i, "partners": partners}


def _token_table(table, text: dict[int, str]) -> list[list[list[Any]]]:
    """Per feature: [[token_id, text, logit], ...]."""
    return [[[t, text.get(t, ""), v] for t, v in zip(ids, vals)]
            for ids, vals in zip(table.index_FK.tolist(), table.value_FK.tolist())]


def _top_peak_texts(record: SAERecord) -> dict[int, list[str]]:
    """Text of the peak token of each top example, per feature, for search."""
    ex = record.examples
    top = (ex.interval_E < 0).nonzero().flatten()
    peak_ids = ex.tokens_EW[top, ex.peak_E[top]].tolist()
    out: dict[int, list[str]] = {}
    for feature, token in zip(ex.feature_E[top].tolist(), peak_ids):
        out.setdefault(feature, []).append(record.token_text.get(token, "").strip())
    return out


def _insert_contexts(session: Session, sae_id: int, record: SAERecord) -> tuple[np.ndarray, np.ndarray]:
    """Store each distinct window once; returns (row id per distinct window, window number per example)."""
    ex = record.examples
    keys_E2 = np.stack([ex.context_E.numpy(), ex.start_E.numpy()], axis=1)
    keys_U2, first_U, window_of_E = np.unique(keys_E2, axis=0, return_index=True, return_inverse=True)
    tokens_UW = ex.tokens_EW.numpy()[first_U]
    text = record.token_text
    rows = ({"sae_id": sae_id, "context_index": int(c), "start": int(s), "token_ids": pack_ids(tokens_UW[u]),
             "pieces": [text.get(t, "") for t in tokens_UW[u].tolist()]}
            for u, (c, s) in enumerate(keys_U2))
    _bulk_insert(session, Context, rows)
    lookup = {(c, s): row_id for row_id, c, s in session.execute(
        select(Context.id, Context.context_index, Context.start).where(Context.sae_id == sae_id))}
    ids_U = np.array([lookup[(int(c), int(s))] for c, s in keys_U2], dtype=np.int64)
    return ids_U, window_of_E.reshape(-1)


def _insert_examples(session: Session, record: SAERecord, feature_ids: np.ndarray, context_id_E: np.ndarray) -> None:
    """One row per example with its float16 activations packed."""
    ex = record.examples
    feature_E, interval_E = ex.feature_E.tolist(), ex.interval_E.tolist()
    rank_E, peak_E, value_E = ex.rank_E.tolist(), ex.peak_E.tolist(), ex.value_E.tolist()
    acts_EW = ex.acts_EW.numpy()
    rows = ({"feature_id": int(feature_ids[feature_E[e]]), "context_id": int(context_id_E[e]),
             "interval": None if interval_E[e] < 0 else interval_E[e], "rank": rank_E[e], "peak": peak_E[e],
             "value": value_E[e], "acts": pack_acts(acts_EW[e])}
            for e in range(len(feature_E)))
    _bulk_insert(session, Example, rows)


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
        _bulk_insert(session, MapPoint, _map_point_rows(sae_id, fmap))
        _bulk_insert(session, MapCluster, ({"sae_id": sae_id, "cluster": c.cluster, "size": c.size, "x": c.x, "y": c.y,
                                            "top_tokens": [list(t) for t in c.top_tokens]} for c in clusters))
        session.add(FeatureMapRun(sae_id=sae_id, config=fmap.config.to_dict(), membership=membership_key(fmap),
                                  n_clusters=fmap.n_clusters, n_noise=fmap.n_noise, n_dead=fmap.n_dead, seconds=seconds))
        session.commit()
    except BaseException:
        session.rollback()
        raise


def membership_key(fmap: FeatureMap) -> str:
    """A short hash of every feature's cluster: equal for maps whose clusters hold the same features."""
    return hashlib.sha256(np.ascontiguousarray(fmap.cluster_F, dtype="<i8").tobytes()).hexdigest()[:16]


def _map_point_rows(sae_id: int, fmap: FeatureMap) -> Iterator[dict[str, Any]]:
    """One row per feature: NULL position for dead features, NULL cluster for those in none."""
    x, y, cluster = fmap.x_F.tolist(), fmap.y_F.tolist(), fmap.cluster_F.tolist()
    for i in range(len(cluster)):
        dead = cluster[i] == DEAD
        yield {"sae_id": sae_id, "feature_index": i, "x": None if dead else x[i], "y": None if dead else y[i],
               "cluster": cluster[i] if cluster[i] >= 0 else None}
