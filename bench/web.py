"""Feature-page latency under load: concurrent clients on a store holding 16k recorded features.

Target (issue 5): p50 <= 30 ms and p99 <= 100 ms with 16 clients, on SQLite and on PostgreSQL.
The store is filled by a real recording pass (a tiny Llama over the demo corpus, a random TopK SAE (k=32) with
--features features, default RecordConfig: 20 top examples and 10x5 quantile samples per feature), then
`saescope serve` runs in a subprocess and each client thread asks for random feature pages until time is up.
Past 16384 features (issue 22: --features 1048576) the store holds bench/million_store.py's tiled recording
(a real 16384-feature TopK recording repeated, renumbered) instead, and the list is measured too: first pages
and "next" pages deep in the list of every sort, apart (on a store with every tenth feature labelled and
another tenth explained), and text searches (target p99 <= 200 ms at 16 clients). The JSON API's feature and
search endpoints are measured beside the pages ("api feature", "api search").
Run: .venv/bin/python bench/web.py [--features 16384] [--clients 16] [--seconds 20] [--workers 2] [--pages all]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from itertools import islice
from pathlib import Path
from urllib.parse import quote

import psycopg
import torch
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.factories builds the tiny model from a config, as the tests do

from app.db import make_engine, session_factory  # noqa: E402
from app.ingest import store_record  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Explanation, Label  # noqa: E402
from app.pipeline import read_sae, register_sae  # noqa: E402
from sae_core.data import iter_contexts, iter_documents  # noqa: E402
from sae_core.lm import load_model  # noqa: E402
from sae_core.provenance import Provenance  # noqa: E402
from sae_core.records import RecordConfig, record_sae  # noqa: E402
from sae_core.saes import SAEConfig, build_sae  # noqa: E402
from sae_core.sites import parse_site  # noqa: E402
from tests.factories import save_tiny_model  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_BENCH = "saescope_bench_web"
SITE = "layers.1.resid_post"
BASE = 16384
"""Features recorded for real; wider stores hold that recording tiled (bench/million_store.py)."""


def make_recording(work: Path, d_sae: int, contexts: int):
    """A random TopK SAE saved to disk and a real recording pass of it over the tiny model. TopK, not ReLU: a
    random ReLU SAE fires thousands of its features on every token, and counting their co-activation pairs
    (quadratic in the features per token) stalled the recording for more than 10 minutes at 16384 features."""
    model_dir = save_tiny_model(work / "model")
    lm = load_model(str(model_dir))
    cfg = SAEConfig(architecture="topk", d_in=32, d_sae=d_sae, k=32,
                    provenance=Provenance(model="tiny-llama", site=parse_site(SITE)))
    loaded = read_sae(build_sae(cfg, seed=0).save(work / f"random-{d_sae}"))
    ctx = list(islice(iter_contexts(iter_documents("demo"), lm.tokenizer, 128), contexts))
    started = time.perf_counter()
    record = record_sae(lm.model, loaded.sae, ctx, site=parse_site(SITE), tokenizer=lm.tokenizer, cfg=RecordConfig())
    print(f"recorded {d_sae} features over {record.n_tokens} tokens in {time.perf_counter() - started:.1f} s "
          f"({len(record.examples.feature_E)} examples)")
    return loaded, record, str(model_dir)


def fill(url: str, loaded, record, model_spec: str) -> int:
    """Migrate the store at `url` and put the recording in; returns the SAE id."""
    upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    with session_factory(engine)() as session:
        sae = register_sae(session, loaded=loaded, model_spec=model_spec)
        store_record(session, sae_id=sae.id, record=record, dataset="demo")
        sae_id = sae.id
        if record.d_sae > BASE:
            add_labels_and_drafts(session, sae_id, record.d_sae)
    engine.dispose()
    print(f"  stored in {time.perf_counter() - started:.1f} s")
    return sae_id


LABELLED_EVERY = 10
"""Every tenth feature labelled and every tenth (others) explained: a million-feature SAE part-way through
labelling, so the label and score sorts page through both their labelled and their unlabelled parts."""
WORDS = ("digits", "animals", "the weather", "code", "names", "and then", "-ing verbs", "French")


def add_labels_and_drafts(session: Session, sae_id: int, d_sae: int) -> None:
    """Labels on every LABELLED_EVERY-th feature, some relabelled, and scored (some unscored) drafts on others."""
    started = time.perf_counter()
    labelled = range(0, d_sae, LABELLED_EVERY)
    rows = [{"sae_id": sae_id, "feature_index": i, "text": f"{WORDS[i % len(WORDS)]} {i % 997}", "source": "human"}
            for i in labelled]
    rows += [{**row, "text": row["text"] + " (revised)"} for row in rows[::7]]  # a history behind some labels
    session.execute(insert(Label), rows)
    session.execute(insert(Explanation), [
        {"sae_id": sae_id, "feature_index": i + LABELLED_EVERY // 2, "text": f"{WORDS[i % len(WORDS)]} draft",
         "explainer_model": "bench", "scorer_model": "bench", "prompt_version": "1",
         "score": None if i % 30 == 0 else (i * 7919 % 1000) / 1000, "scores": {}} for i in labelled])
    session.commit()
    if session.get_bind().dialect.name == "postgresql":
        # As autovacuum would have long since, on a store labelled over time: planned from the empty tables'
        # statistics, a search expected its labels to match a few features and joined every feature.
        session.execute(text("ANALYZE labels, explanations"))
        session.commit()
    print(f"  {len(rows)} labels and {len(labelled)} drafts in {time.perf_counter() - started:.1f} s")


def postgres_database(create: bool) -> str:
    """(Re)create the benchmark's PostgreSQL database, or just drop it when done."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_BENCH}" WITH (FORCE)')
        if create:
            admin.execute(f'CREATE DATABASE "{PG_BENCH}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_BENCH}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(url: str, port: int, workers: int) -> Iterator[subprocess.Popen]:
    """`saescope serve` in a subprocess, once it answers; stopped, workers and all, however the block ends.

    The server runs in a session (and process group) of its own, and the whole group is stopped on the way out:
    when a bench died (an exception, Ctrl-C), stopping only the process it started left uvicorn's workers
    running, orphaned, burning CPU. Its own session also keeps the terminal's Ctrl-C from reaching the
    workers before the bench has stopped asking them for pages."""
    command = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--db", url,
               "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        wait_until_answering(server, port)
        yield server
    finally:
        stop_group(server)


def wait_until_answering(server: subprocess.Popen, port: int) -> None:
    """Return once the server answers its home page; SystemExit if it exits or takes a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            http = HTTPConnection("127.0.0.1", port, timeout=1)
            http.request("GET", "/")
            if http.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
    raise SystemExit("server did not start within 60 s")


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server, which stops its workers and waits for them, then SIGKILL to whatever of its process
    group still runs (a worker in a long query 10 s on, or one the server left when it died)."""
    server.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(10)
    with contextlib.suppress(ProcessLookupError):  # the whole group has gone
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def feature_pages(sae_id: int, d_sae: int):
    """A random feature page."""
    return lambda rng: f"/saes/{sae_id}/features/{rng.randrange(d_sae)}"


LIST_SORTS = ("index", "density", "max_act", "mean_act", "label", "score")
SEARCHES = ("the", "and", "ing", "zzzz")


def list_pages(sort: str, after: bool):
    """A list page in one sort, either direction: the first, or (`after`) the next page after a random cursor
    deep in the list. The page number rides along, so sorts that still skip rows skip that many."""
    def pages(sae_id: int, d_sae: int):
        def url(rng: random.Random) -> str:
            base = f"/saes/{sae_id}/features?sort={sort}&desc={str(rng.random() < 0.5).lower()}&per_page=50"
            if not after:
                return base
            index = rng.randrange(d_sae)
            return f"{base}&page={index // 50 + 2}&after={index}{cursor_key(sort, index, rng)}"
        return url
    return pages


def cursor_key(sort: str, index: int, rng: random.Random) -> str:
    """The sort value part of a random cursor: half of the label and score cursors fall in the unlabelled
    (unscored) rest, which has none."""
    if sort == "index" or (sort in ("label", "score") and rng.random() < 0.5):
        return ""
    if sort == "label":
        return f"&after_text={quote(f'{WORDS[index % len(WORDS)]} {index % 997}')}"
    scale = {"density": 0.01, "score": 1}.get(sort, 3)
    return f"&after_key={rng.random() * scale:.6f}"


def search_pages(sae_id: int, _d_sae: int):
    """A text search of the list (labels and top tokens), first page, index order."""
    return lambda rng: f"/saes/{sae_id}/features?q={rng.choice(SEARCHES)}&per_page=50"


def as_json(pages):
    """The same requests of the JSON API, whose paths are the pages' under /api."""
    def api_pages(sae_id: int, d_sae: int):
        url = pages(sae_id, d_sae)
        return lambda rng: "/api" + url(rng)
    return api_pages


def load(port: int, sae_id: int, d_sae: int, clients: int, seconds: float, pages=feature_pages) -> tuple[list[float], int]:
    """`clients` threads asking for random pages for `seconds`; returns latencies and failures."""
    host = "127.0.0.1"
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    url = pages(sae_id, d_sae)

    def client(seed: int) -> None:
        # http.client, not httpx: the load generator shares the CPUs with the server, and httpx spent
        # about 4 ms of CPU per page here (as much as the server), http.client a fraction of that.
        rng = random.Random(seed)
        http = HTTPConnection(host, port, timeout=30)
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    http.request("GET", url(rng))
                    response = http.getresponse()
                    response.read()
                    ok = response.status == 200
                except TimeoutError:  # a page slower than the timeout counts as failed, and the client goes on
                    http.close()
                    ok = False
                elapsed = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        failures[0] += 1
        finally:
            http.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_backend(name: str, url: str, recording, args) -> None:
    print(f"{name}: {url}")
    sae_id = fill(url, *recording)
    port = free_port()
    with serving(url, port, args.workers):
        load(port, sae_id, args.features, args.clients, min(3.0, args.seconds))  # warm-up: caches, pools
        for clients in (1, args.clients) if wanted(args, "feature") else ():  # one client: the service time
            latencies, failures = load(port, sae_id, args.features, clients, args.seconds)
            report("feature", clients, latencies, failures, args.seconds, "p50 <= 30, p99 <= 100")
        if wanted(args, "api feature"):
            latencies, failures = load(port, sae_id, args.features, args.clients, args.seconds,
                                       as_json(feature_pages))
            report("api feature", args.clients, latencies, failures, args.seconds, "p50 <= 30, p99 <= 100")
        if args.features > BASE:
            kinds = [(f"{sort} {'next' if after else 'first'}", list_pages(sort, after))
                     for sort in LIST_SORTS for after in (False, True)]
            # searches before the label and score sorts, whose pages skipping rows outlast the measurement
            searches = [("search", search_pages), ("api search", as_json(search_pages))]
            for name, pages in [*kinds[:8], *searches, *kinds[8:]]:
                if wanted(args, name):
                    latencies, failures = load(port, sae_id, args.features, args.clients, args.seconds, pages)
                    report(name, args.clients, latencies, failures, args.seconds, "p99 <= 200")


def wanted(args, kind: str) -> bool:
    """Whether `--pages` asks for pages of this kind ("feature", "search", a sort's name: "label" for both of its)."""
    return args.pages == "all" or any(kind == name or kind.split()[0] == name for name in args.pages.split(","))


def report(kind: str, clients: int, latencies: list[float], failures: int, seconds: float, target: str) -> None:
    ms = [1000 * t for t in latencies] or [float("nan")]
    print(f"  {kind:14s} {clients:2d} client{'s' if clients > 1 else ' '}: {len(latencies)} pages in {seconds:.0f} s "
          f"({len(latencies) / seconds:.0f}/s), {failures} failed; p50 {percentile(ms, 50):.1f} ms  "
          f"p99 {percentile(ms, 99):.1f} ms  max {max(ms):.1f} ms (target {target})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--contexts", type=int, default=256, help="128-token contexts of the demo corpus to record")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pages", default="all",
                        help='comma-separated kinds to measure: feature, search, api (both JSON kinds), or a sort '
                             '(index, label, "label next"...)')
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="saescope-bench-web-") as tmp:
        work = Path(tmp)
        if args.features > BASE:
            from bench.million_store import million_record

            record, model_spec = million_record(work, args.features, BASE, 0.1)
            sae_dir = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=args.features, k=32,
                                          provenance=Provenance(model="tiny-llama", site=parse_site(SITE))),
                                seed=0).save(work / "sae")
            recording = (read_sae(sae_dir), record, model_spec)
        else:
            recording = make_recording(work, args.features, args.contexts)
        print(f"clients={args.clients} workers={args.workers} seconds={args.seconds:.0f} cpus={os.cpu_count()} "
              f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
        backends = {"sqlite": lambda: f"sqlite:///{work / 'store.db'}", "postgres": lambda: postgres_database(True)}
        try:
            for name in args.backends.split(","):
                run_backend(name, backends[name](), recording, args)
        finally:
            if "postgres" in args.backends:
                postgres_database(False)


if __name__ == "__main__":
    main()
