"""The steps behind `saescope map` (and the map stage of `record` and the demo): directions -> map -> store."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.orm import Session

from sae_core.maps import FeatureMap, MapConfig, map_features, summarise_clusters

from . import crud
from .ingest import store_map
from .models import FeatureMapRun, Sae, as_utc
from .pipeline import read_sae


def map_into_store(session: Session, *, sae_row: Sae, cfg: MapConfig = MapConfig()) -> FeatureMap:
    """Lay out and cluster a recorded SAE's features and replace its stored map (nothing stored on an error)."""
    if sae_row.recorded_at is None:
        raise ValueError(f"SAE {sae_row.name!r} is not recorded: `saescope record --sae {sae_row.id}` first "
                         "(the map leaves dead features out and summarises clusters by their top tokens)")
    if not sae_row.source_path or not Path(sae_row.source_path).exists():
        raise ValueError(f"the files of SAE {sae_row.name!r} are not at {sae_row.source_path!r}: "
                         "its decoder directions are needed for the map")
    W_dec_FD = read_sae(sae_row.source_path).sae.W_dec
    dead_F = crud.dead_mask(session, sae_id=sae_row.id)
    start = time.perf_counter()
    fmap = map_features(W_dec_FD, ~dead_F, cfg)
    seconds = time.perf_counter() - start
    clusters = summarise_clusters(fmap, crud.top_tokens(session, sae_id=sae_row.id))
    store_map(session, sae_id=sae_row.id, fmap=fmap, clusters=clusters, seconds=seconds)
    return fmap


def map_is_current(session: Session, *, sae_row: Sae, cfg: MapConfig) -> bool:
    """Whether the stored map was made with `cfg` after the SAE's latest recording (the demo then reuses it)."""
    run = session.get(FeatureMapRun, sae_row.id)
    return (run is not None and sae_row.recorded_at is not None and run.config == cfg.to_dict()
            and as_utc(run.created_at) >= as_utc(sae_row.recorded_at))
