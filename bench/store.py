"""The store's layout by measurement: database size per feature and the time to load one feature page.

Records a real SAE (the demo's, or a random TopK SAE) on SmolLM2 over the demo corpus, stores it in SQLite
and in a throw-away PostgreSQL database, and prints for each: bytes per feature, rows, the median and p99
time of `crud.feature_page` over random features, and what the layout's two choices save against the
plain alternative on the same examples: windows stored once instead of once per example, and packed
int32 ids / float16 activations instead of JSON lists.

    .venv/bin/python bench/store.py [--sae runs/demo/sae-...] [--tokens 50000] [--pages 300]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from itertools import islice
from pathlib import Path

import psycopg
from sqlalchemy import func, select, text

from app import crud
from app.db import make_engine, session_factory
from app.ingest import store_record
from app.migrate import upgrade
from app.models import Context, Example, Feature
from app.packing import pack_acts, pack_ids
from sae_core.data import iter_contexts, iter_documents
from sae_core.lm import load_model, parse_dtype
from sae_core.provenance import Provenance
from sae_core.records import RecordConfig, record_sae
from sae_core.saes import SAEConfig, build_sae, load_sae
from sae_core.sites import parse_site

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


def make_record(args: argparse.Namespace):
    lm = load_model("smollm2", dtype=parse_dtype("bfloat16"))
    if args.sae:
        sae = load_sae(args.sae)
    else:
        sae = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=args.d_sae, k=32,
                                  provenance=Provenance(site=parse_site("layers.6.resid_post"))), seed=0)
    contexts = list(islice(iter_contexts(iter_documents("demo"), lm.tokenizer), args.tokens // 127 + 1))
    return record_sae(lm.model, sae, contexts, site=sae.cfg.provenance.site or parse_site("layers.6.resid_post"),
                      tokenizer=lm.tokenizer, cfg=RecordConfig(batch_size=16), progress=True)


def database_bytes(engine, url: str) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            return Path(url.removeprefix("sqlite:///")).stat().st_size
        return int(conn.scalar(text("SELECT pg_database_size(current_database())")))


def measure(url: str, record, pages: int) -> dict:
    upgrade(url)
    engine = make_engine(url)
    empty = database_bytes(engine, url)
    with session_factory(engine)() as session:
        sae = crud.create_sae(session, name="bench", model_name="SmolLM2", site="layers.6.resid_post",
                              architecture="topk", d_in=576, d_sae=record.d_sae)
        start = time.perf_counter()
        store_record(session, sae_id=sae.id, record=record, dataset="demo")
        store_s = time.perf_counter() - start
        counts = {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                  for model in (Feature, Context, Example)}
        alive = [i for i in range(record.d_sae) if record.count_F[i] > 0]
        rng = random.Random(0)
        times = []
        for index in rng.choices(alive, k=pages):
            start = time.perf_counter()
            crud.feature_page(session, sae_id=sae.id, feature_index=index)
            times.append(time.perf_counter() - start)
    size = database_bytes(engine, url) - empty
    engine.dispose()
    times.sort()
    return {"bytes": size, "bytes_per_feature": size / record.d_sae, "rows": counts, "store_s": store_s,
            "page_ms_p50": 1000 * statistics.median(times), "page_ms_p99": 1000 * times[int(0.99 * (len(times) - 1))]}


def layout_savings(record) -> dict:
    """Bytes of the example windows as stored, against one window per example and against JSON lists."""
    ex = record.examples
    windows = {(int(c), int(s)) for c, s in zip(ex.context_E.tolist(), ex.start_E.tolist())}
    ids_packed = len(pack_ids(ex.tokens_EW[0].numpy()))
    acts_packed = len(pack_acts(ex.acts_EW[0].numpy()))
    ids_json = statistics.mean(len(json.dumps(row)) for row in ex.tokens_EW[:2000].tolist())
    acts_json = statistics.mean(len(json.dumps([round(v, 4) for v in row])) for row in ex.acts_EW[:2000].tolist())
    n = len(ex.feature_E)
    return {"examples": n, "distinct_windows": len(windows), "window_sharing": n / len(windows),
            "ids_bytes_packed_vs_json": (ids_packed, round(ids_json)),
            "acts_bytes_packed_vs_json": (acts_packed, round(acts_json))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", type=Path, help="an SAE directory (default: a random TopK SAE)")
    parser.add_argument("--d-sae", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    record = make_record(args)
    print(f"recorded {record.d_sae} features over {record.n_tokens} tokens; {json.dumps(layout_savings(record))}")
    with tempfile.TemporaryDirectory() as tmp:
        results = {"sqlite": measure(f"sqlite:///{tmp}/bench.db", record, args.pages)}
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as err:
        print(f"postgresql: skipped ({str(err).strip().splitlines()[0]})")
    else:
        name = f"saescope_bench_{uuid.uuid4().hex[:8]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            results["postgresql"] = measure(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", record, args.pages)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    for backend, r in results.items():
        print(f"{backend:10s} {r['bytes'] / 1e6:7.1f} MB  {r['bytes_per_feature'] / 1e3:6.1f} kB/feature  "
              f"rows {r['rows']}  store {r['store_s']:.1f} s  feature page p50 {r['page_ms_p50']:.1f} ms "
              f"p99 {r['page_ms_p99']:.1f} ms")


if __name__ == "__main__":
    main()
