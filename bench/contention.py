"""Feature-page and "test it" latency while 200-token steering runs are going, beside the same with the model idle.

Issue 19: a steering generation held the model for its whole length, so the "test it" box waited for the
rest of the run; now the generation takes the model per token. A real `saescope serve` (one worker) runs
on a SQLite store holding a random SAE recorded over the chosen model; a labeller's API token drives
POST /api/steer as an event stream (200 new tokens, two rows: baseline and steered, greedy on a raw story
prompt, which neither model ends early) one run after another on a thread, while the main thread asks, one
at a time, for a feature page and for "test it" on a sentence, from each run's first token event to its
last. Figures are medians, 90th percentiles and maxima over every request of every run.

    .venv/bin/python bench/contention.py [--model tiny|smollm2] [--runs 5] [--features 2048]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from itertools import islice
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.factories for the tiny model; bench.web for the server

from app import crud  # noqa: E402
from app.db import make_engine, session_factory  # noqa: E402
from app.pipeline import read_sae  # noqa: E402
from app.security import hash_api_token, hash_password, new_api_token  # noqa: E402
from bench.web import fill, free_port, serving  # noqa: E402
from sae_core.data import iter_contexts, iter_documents  # noqa: E402
from sae_core.lm import load_model  # noqa: E402
from sae_core.provenance import Provenance  # noqa: E402
from sae_core.records import RecordConfig, record_sae  # noqa: E402
from sae_core.saes import SAEConfig, build_sae  # noqa: E402
from sae_core.sites import parse_site  # noqa: E402
from tests.factories import save_tiny_model  # noqa: E402

MODELS = {"tiny": "layers.1.resid_post", "smollm2": "layers.6.resid_post"}
"""Model (the saved tiny Llama of the tests, or the smollm2 spec) -> the site its SAE reads."""
TEST_TEXT = "The cat sat on the mat and looked out of the window at the rain."
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
NEW_TOKENS = 200


def store(work: Path, model: str, d_sae: int) -> tuple[str, int, str]:
    """(store URL, SAE id, API token of a labeller): a random SAE recorded over a few demo contexts."""
    spec = str(save_tiny_model(work / "model")) if model == "tiny" else model
    lm = load_model(spec)
    site = parse_site(MODELS[model])
    cfg = SAEConfig(architecture="relu", d_in=lm.model.config.hidden_size, d_sae=d_sae,
                    provenance=Provenance(model=model, site=site))
    loaded = read_sae(build_sae(cfg, seed=0).save(work / "sae"))
    contexts = list(islice(iter_contexts(iter_documents("demo"), lm.tokenizer, 64), 16))
    record = record_sae(lm.model, loaded.sae, contexts, site=site, tokenizer=lm.tokenizer,
                        cfg=RecordConfig(n_top=5, batch_size=8))
    url = f"sqlite:///{work / 'bench.db'}"
    sae_id = fill(url, loaded, record, spec)
    token = new_api_token()
    engine = make_engine(url)
    with session_factory(engine)() as session:
        user = crud.create_user(session, name="bench", password_hash=hash_password("bench-" + token), role="labeller")
        crud.add_api_token(session, user_id=user.id, name="bench", token_hash=hash_api_token(token))
    engine.dispose()
    return url, sae_id, token


def timed_get(http: HTTPConnection, path: str) -> float:
    """Seconds one GET took; a non-200 answer stops the benchmark."""
    started = time.perf_counter()
    http.request("GET", path)
    response = http.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
    return time.perf_counter() - started


def steer(port: int, sae_id: int, token: str, seed: int, generating: threading.Event | None = None) -> float:
    """Seconds from the first token to the last of one 200-token steering request, read as its event stream;
    `generating` is set from the first token event until the done event."""
    body = {"sae_id": sae_id, "prompt": PROMPT, "raw": True, "max_new_tokens": NEW_TOKENS, "temperature": 0.0,
            "seed": seed, "interventions": [{"feature": 0, "mode": "add", "value": 4.0}]}
    generating = generating or threading.Event()
    http = HTTPConnection("127.0.0.1", port, timeout=600)
    http.request("POST", "/api/steer", body=json.dumps(body),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream",
                          "Authorization": f"Bearer {token}"})
    response = http.getresponse()
    if response.status != 200:
        raise SystemExit(f"POST /api/steer: {response.status} {response.read()[:300]!r}")
    tokens = 0
    for line in response:
        if line.startswith(b"event: token") and not tokens:
            first = time.perf_counter()
            generating.set()
        tokens += line.startswith(b"event: token")
        if line.startswith((b"event: done", b"event: error")):
            generating.clear()
            break
    http.close()
    if tokens != 2 * NEW_TOKENS:
        raise SystemExit(f"the steering run drew {tokens} tokens over its two rows, not {2 * NEW_TOKENS}")
    return time.perf_counter() - first


def probe(port: int, sae_id: int, d_sae: int, count: int, during: threading.Event | None = None) -> dict[str, list[float]]:
    """Alternate feature-page and "test it" requests: `count` of each, or with `during` as many as start while
    it is set (it is first awaited)."""
    http, rng = HTTPConnection("127.0.0.1", port, timeout=600), random.Random(0)
    seen: dict[str, list[float]] = {"page": [], "test it": []}
    text = quote(TEST_TEXT)
    if during is not None:
        during.wait(600)
    while len(seen["page"]) < count if during is None else during.is_set():
        feature = rng.randrange(d_sae)
        seen["page"].append(timed_get(http, f"/saes/{sae_id}/features/{feature}"))
        if during is not None and not during.is_set():
            break
        seen["test it"].append(timed_get(http, f"/saes/{sae_id}/features/{feature}/test?text={text}"))
        time.sleep(0.02)
    http.close()
    return seen


def under_steering(port: int, sae_id: int, d_sae: int, token: str, runs: int) -> tuple[dict[str, list[float]], list]:
    """Probe while each of `runs` steering runs is generating; returns the latencies and each run's seconds."""
    seen: dict[str, list[float]] = {"page": [], "test it": []}
    durations: list[float] = []
    for seed in range(runs):
        generating = threading.Event()
        runner = threading.Thread(target=lambda s=seed, g=generating: durations.append(steer(port, sae_id, token, s, g)))
        runner.start()
        for kind, values in probe(port, sae_id, d_sae, 0, generating).items():
            seen[kind] += values
        runner.join()
    return seen, durations


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (f"{name:>8}: median {1000 * statistics.median(values):8.1f} ms   p90 {1000 * p90:8.1f} ms   "
            f"max {1000 * ordered[-1]:8.1f} ms   (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--runs", type=int, default=5, help="Steering runs to probe under.")
    parser.add_argument("--features", type=int, default=2048, help="SAE dictionary size.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, sae_id, token = store(Path(tmp), args.model, args.features)
        port = free_port()
        with serving(url, port, workers=1):
            steer(port, sae_id, token, seed=99)  # loads the model in the server and warms every path
            idle = probe(port, sae_id, args.features, 20)
            busy, durations = under_steering(port, sae_id, args.features, token, args.runs)
            alone = [steer(port, sae_id, token, seed) for seed in range(2)]
    print(f"code at {ROOT}, model {args.model}, {args.runs} steering runs")
    print("model idle:")
    for kind, values in idle.items():
        print(summary(kind, values))
    print(f"while {NEW_TOKENS}-token steering runs go on:")
    for kind, values in busy.items():
        print(summary(kind, values))
    print(f"steering run, first token to last: median {statistics.median(durations):.2f} s with the probes, "
          f"{statistics.median(alone):.2f} s alone")


if __name__ == "__main__":
    main()
