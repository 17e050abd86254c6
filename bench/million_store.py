"""Bulk import at a million features (issue 22): features/s into SQLite and PostgreSQL, and bytes per feature.

Target: >= 10,000 features/s on both backends. The recording stored is a real recording pass tiled: a random
TopK SAE (k=32) of --base features recorded on the tiny test model over --tokens-per-feature x base tokens of
the demo corpus, repeated until it has --features features, each copy's features, neighbours, co-activation
partners and contexts renumbered as its own (`tiled`). So rows per feature are what one pass of a
--features-wide random TopK SAE over tokens-per-feature x features tokens gives (0.1: a million features
over 100k tokens), without an O(F^2) nearest-neighbour search a real pass at a million features needs.
Recording the whole million-feature SAE is bench/million_sae.py's SAE under `saescope record`.
Run: .venv/bin/python bench/million_store.py [--features 1048576] [--backends sqlite,postgres] [--reference]
(--reference also times the old writer, SQLAlchemy inserts bound through the column types, on the same rows).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.factories builds the tiny model from a config, as the tests do

from app import bulk, crud  # noqa: E402
from app.db import make_engine, session_factory  # noqa: E402
from app.ingest import store_record  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from bench.store import database_bytes  # noqa: E402
from bench.web import postgres_database  # noqa: E402
from sae_core.data import iter_contexts, iter_documents  # noqa: E402
from sae_core.lm import load_model  # noqa: E402
from sae_core.provenance import Provenance  # noqa: E402
from sae_core.records import RecordConfig, SAERecord, record_sae  # noqa: E402
from sae_core.records.directions import TopTable  # noqa: E402
from sae_core.records.sae_record import ExampleTable  # noqa: E402
from sae_core.saes import SAEConfig, build_sae  # noqa: E402
from sae_core.sites import parse_site  # noqa: E402
from tests.factories import save_tiny_model  # noqa: E402

SITE = "layers.1.resid_post"


def base_recording(work: Path, features: int, tokens: int) -> tuple[SAERecord, str]:
    """A real recording of a random TopK SAE over `tokens` tokens of the demo corpus on the tiny model."""
    model_dir = save_tiny_model(work / "model")
    lm = load_model(str(model_dir))
    sae = build_sae(SAEConfig(architecture="topk", d_in=lm.model.config.hidden_size, d_sae=features, k=32,
                              provenance=Provenance(model="tiny-llama", site=parse_site(SITE))), seed=0)
    contexts = list(islice(iter_contexts(iter_documents("demo"), lm.tokenizer, 128), max(1, tokens // 127)))
    record = record_sae(lm.model, sae, contexts, site=parse_site(SITE), tokenizer=lm.tokenizer, cfg=RecordConfig())
    return record, str(model_dir)


def tiled(record: SAERecord, copies: int) -> SAERecord:
    """`copies` of `record` side by side: copy c's features are c*F.., its contexts c*n.., as if it were
    recorded over its own text; neighbour and partner indices point into the same copy."""
    F, n, E = record.d_sae, record.n_contexts, len(record.examples.feature_E)
    tile_E = torch.arange(copies).repeat_interleave(E)
    ex = record.examples

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.repeat(copies, *([1] * (t.dim() - 1)))

    examples = ExampleTable(**{name: rows(getattr(ex, name)) for name in ExampleTable.__dataclass_fields__})
    examples = replace(examples, feature_E=examples.feature_E + tile_E * F, context_E=examples.context_E + tile_E * n)

    def features(table: TopTable | None) -> TopTable | None:
        if table is None:
            return None
        index_FK = rows(table.index_FK)
        offset_F1 = torch.arange(copies).repeat_interleave(F)[:, None] * F
        return TopTable(torch.where(index_FK >= 0, index_FK + offset_F1, index_FK), rows(table.value_FK))

    return replace(record, n_tokens=record.n_tokens * copies, n_contexts=n * copies, count_F=rows(record.count_F),
                   max_F=rows(record.max_F), mean_F=rows(record.mean_F), hist_FB=rows(record.hist_FB),
                   examples=examples, neighbours=features(record.neighbours), coactive=features(record.coactive),
                   promoted=TopTable(rows(record.promoted.index_FK), rows(record.promoted.value_FK)),
                   suppressed=TopTable(rows(record.suppressed.index_FK), rows(record.suppressed.value_FK)))


def million_record(work: Path, features: int, base: int, tokens_per_feature: float) -> tuple[SAERecord, str]:
    """A recording of `features` features (`base` recorded, then tiled; features must be a multiple of base)
    and the directory of the tiny model it was recorded on."""
    if features % base:
        raise SystemExit(f"--features {features} is not a multiple of --base {base}")
    started = time.perf_counter()
    record, model_spec = base_recording(work, base, int(base * tokens_per_feature))
    print(f"recorded {base} features over {record.n_tokens} tokens in {time.perf_counter() - started:.1f} s; "
          f"tiled x{features // base}")
    return tiled(record, features // base), model_spec



def measure(url: str, record: SAERecord, writer: bulk.Writer) -> dict[str, float]:
    """Import `record` into a fresh store at `url`: seconds, features/s, bytes per feature."""
    upgrade(url)
    engine = make_engine(url)
    empty = database_bytes(engine, url)
    with session_factory(engine)() as session:
        sae = crud.create_sae(session, name="bench", model_name="tiny-llama", site=SITE, architecture="topk",
                              d_in=32, d_sae=record.d_sae)
        started = time.perf_counter()
        store_record(session, sae_id=sae.id, record=record, dataset="demo", writer=writer)
        seconds = time.perf_counter() - started
    size = database_bytes(engine, url) - empty
    engine.dispose()
    return {"seconds": seconds, "features_per_s": record.d_sae / seconds, "bytes_per_feature": size / record.d_sae,
            "gb": size / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1 << 20)
    parser.add_argument("--base", type=int, default=16384, help="features actually recorded, then tiled")
    parser.add_argument("--tokens-per-feature", type=float, default=0.1)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--reference", action="store_true", help="also time the reference writer")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="saescope-bench-store-") as tmp:
        work = Path(tmp)
        record, _ = million_record(work, args.features, args.base, args.tokens_per_feature)
        n_examples = len(record.examples.feature_E)
        print(f"{record.d_sae} features, {record.n_tokens} tokens, {n_examples} examples "
              f"({n_examples / record.d_sae:.1f} per feature), {record.dead_count} dead")
        writers = {"bulk": bulk.copy_rows, **({"reference": bulk.insert_rows} if args.reference else {})}
        for backend in args.backends.split(","):
            for name, writer in writers.items():
                url = f"sqlite:///{work / f'{name}.db'}" if backend == "sqlite" else postgres_database(True)
                try:
                    r = measure(url, record, writer)
                finally:
                    if backend == "postgres":
                        postgres_database(False)
                    else:
                        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
                print(f"  {backend:8s} {name:9s} {r['seconds']:7.1f} s  {r['features_per_s']:9.0f} features/s "
                      f"(target >= 10000)  {r['bytes_per_feature']:7.0f} B/feature  {r['gb']:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
