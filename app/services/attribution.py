"""Attribution runs for the web app: started as jobs on one worker thread, polled for progress, saved when done.

A run splices SAEs into the shared model, so it holds the model cache's lock throughout (other forwards wait
their turn, as during a steering token). A job lives in memory until it is read after finishing; its graph
is in the store from the moment it completes, and nothing is stored for a failed run.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from sqlalchemy.orm import Session

from sae_core.attribution import (
    AttributionConfig,
    AttributionError,
    AttributionGraph,
    AttributionRequest,
    attribute,
    dictionaries,
)
from sae_core.attribution.inputs import one_token, prompt_ids, starts_special, token_text
from sae_core.attribution.replacement import ReplacementModel
from sae_core.attribution.replacement_graph import ReplacementConfig, build_graph

from .. import crud
from ..models import Sae
from .inference import ModelCache, RunnableSae

Progress = Callable[[str, float], None]

MAX_JOBS = 64
"""Finished jobs kept for their pollers; older ones are forgotten (their graphs stay in the store)."""


@dataclass
class AttributionJob:
    """A run's progress as its poller sees it."""

    id: str
    stage: str = "queued"
    fraction: float = 0.0
    graph_id: int | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class RunSpec:
    """What to run and where its graph goes."""

    set_id: int
    saes: list[Sae]
    request: AttributionRequest
    cfg: AttributionConfig
    owner_id: int | None


@dataclass(frozen=True)
class ReplacementSpec:
    """A replacement-model graph to build on a set of transcoders (one per layer) and where it goes."""

    set_id: int
    saes: list[Sae]
    prompt: str
    cfg: ReplacementConfig
    targets: list[str]
    """Output tokens picked (as text, each one token); empty: the likeliest tokens."""
    node_threshold: float
    edge_threshold: float
    owner_id: int | None


def _one_model(saes: list[Sae]) -> None:
    models = sorted({sae.model_name for sae in saes})
    if len(models) > 1:
        raise AttributionError("sae", f"the set's SAEs read different models ({', '.join(models)}); "
                                      "every SAE of a set must read the same model")


def replacement_model(loaded: list[RunnableSae], prompt: str) -> ReplacementModel:
    """The prompt's replacement model on the loaded transcoders (their shared model's)."""
    lm = loaded[0].lm
    ids = prompt_ids(lm.tokenizer, prompt, "prompt", AttributionConfig.max_tokens)
    return ReplacementModel(lm.model, [run.sae for run in loaded], torch.tensor(ids, device=lm.model.device),
                            starts_special(lm.tokenizer, ids))


class AttributionService:
    """Runs attribution on the shared models, one at a time, and saves each finished graph."""

    def __init__(self, models: ModelCache, sessions: Callable[[], Session]):
        self.models = models
        self.sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribution")
        self._jobs: dict[str, AttributionJob] = {}

    def compute(self, spec: RunSpec, progress: Progress = lambda _s, _f: None) -> AttributionGraph:
        """Run attribution now on the calling thread; AttributionError for a request it cannot carry out."""
        _one_model(spec.saes)
        with self.models.hold_all(spec.saes) as loaded:
            lm = loaded[0].lm
            dicts = dictionaries(lm.model, lm.name, [(str(sae.id), run.sae) for sae, run in zip(spec.saes, loaded,
                                                                                               strict=True)])
            return attribute(lm, dicts, spec.request, spec.cfg, progress)

    def save(self, spec: RunSpec, graph: AttributionGraph) -> int:
        with self.sessions() as session:
            row = crud.save_graph(session, set_id=spec.set_id, sae_ids=[sae.id for sae in spec.saes],
                                  graph=graph.to_dict(), owner_id=spec.owner_id)
            return row.id

    def compute_replacement(self, spec: ReplacementSpec, progress: Progress = lambda _s, _f: None
                            ) -> tuple[dict[str, Any], bytes]:
        """Build a replacement-model graph now; what the store keeps of it: its JSON (the graph, the prompt's
        tokens as text, the run's settings and scores) and its adjacency."""
        _one_model(spec.saes)
        started = time.perf_counter()
        with self.models.hold_all(spec.saes) as loaded:
            progress("replacement model", 0.0)
            tokenizer = loaded[0].lm.tokenizer
            cfg = replace(spec.cfg, targets=tuple(one_token(tokenizer, text, "targets") for text in spec.targets))
            rm = replacement_model(loaded, spec.prompt)
            graph = build_graph(rm, cfg, lambda f: progress("edges", f))
        texts = [token_text(tokenizer, t) for t in graph.logit_tokens]
        scores = graph.scores()
        data = graph.to_dict() | {
            "method": "replacement", "prompt": spec.prompt, "target": texts[0], "logit_texts": texts,
            "tokens": [token_text(tokenizer, t) for t in graph.token_ids], "sites": [sae.site for sae in spec.saes],
            "node_threshold": spec.node_threshold, "edge_threshold": spec.edge_threshold,
            "replacement_score": scores.replacement, "completeness_score": scores.completeness,
            "max_feature_nodes": spec.cfg.max_feature_nodes, "seconds": time.perf_counter() - started}
        return data, graph.adjacency_bytes()

    def save_replacement(self, spec: ReplacementSpec, stored: tuple[dict[str, Any], bytes]) -> int:
        data, adjacency = stored
        with self.sessions() as session:
            row = crud.save_graph(session, set_id=spec.set_id, sae_ids=[sae.id for sae in spec.saes], graph=data,
                                  owner_id=spec.owner_id, adjacency=adjacency)
            return row.id

    def start(self, spec: RunSpec | ReplacementSpec) -> AttributionJob:
        """Queue a run; the job says its stage and, once done, its graph's id or the error."""
        job = AttributionJob(uuid.uuid4().hex)
        if len(self._jobs) >= MAX_JOBS:
            for key in [k for k, j in self._jobs.items() if j.done.is_set()][: len(self._jobs) - MAX_JOBS + 1]:
                del self._jobs[key]
        self._jobs[job.id] = job
        self._pool.submit(self._run, job, spec)
        return job

    def _run(self, job: AttributionJob, spec: RunSpec | ReplacementSpec) -> None:
        def progress(stage: str, fraction: float) -> None:
            job.stage, job.fraction = stage, fraction

        try:
            if isinstance(spec, ReplacementSpec):
                job.graph_id = self.save_replacement(spec, self.compute_replacement(spec, progress))
            else:
                job.graph_id = self.save(spec, self.compute(spec, progress))
        except Exception as err:  # a job's failure is reported to its poller, never lost in the thread
            job.error = str(err).splitlines()[0] if str(err) else type(err).__name__
        finally:
            job.done.set()

    def job(self, job_id: str) -> AttributionJob | None:
        return self._jobs.get(job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
