"""The steering worker: one generation at a time, on its own thread, streaming events, cancellable.

A generation takes the shared model of `app.state.models` one forward at a time (ModelCache.turn), its
steering hooks spliced only inside each turn, so a "test it" forward or a text search waits for one token,
not the whole run, and never sees the hooks. One generation runs at a time (each holds a KV cache and keeps
a core busy); rather than queue a request behind a run of many seconds, a second one is refused at once
(WorkerBusy, answered 429 with Retry-After) and the client retries. The generation runs on the worker's
thread, so the event loop, and with it every page, stays free; events cross to the loop through an
asyncio queue. Cancelling a job (the client went away) stops it before its next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sae_core.explain import EndpointConfig
from sae_core.generation import Generation, GenerationError, Limits, TokenEvent, collect, encode_prompt
from sae_core.judge import JudgeError, Verdict, judge
from sae_core.steering import Control, Direction, Steering, SteeringError, stream_steered
from sae_core.steering_measures import Sweep, SweepPoint, encode_target, keep_logp, measure_rows, strongest_within

from ..models import Sae
from ..settings import Settings
from ..steer_schemas import RowOut, SteerIn
from .inference import InferenceUnavailable, ModelCache, RunnableSae, model_spec

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
"""(kind, data): loading (the model is not loaded yet: {"model": spec}, before anything else), start, token,
judging, done or error; see SteeringWorker._generate for each one's data."""


def judge_config(settings: Settings) -> EndpointConfig | None:
    """The steering judge the settings name, or None. Its key is the settings' own (never an environment
    variable meant for the explainers), so one endpoint's key is not sent to another."""
    if not settings.judge_url:
        return None
    return EndpointConfig(settings.judge_url, settings.judge_model, api_key=settings.judge_api_key, api_key_env="",
                          timeout_s=settings.judge_timeout_s)


def steer_limits(settings: Settings) -> Limits:
    """The server's bounds on one steering request."""
    return Limits(max_prompt_tokens=settings.steer_max_prompt_tokens, max_new_tokens=settings.steer_max_new_tokens)


class WorkerBusy(Exception):
    """A generation is already running; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__("a steering generation is already running; try again shortly")
        self.retry_after = retry_after


class Job:
    """One generation as seen from the event loop: its events as they come, and a way to stop it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.cancelled = threading.Event()
        self._loop = loop
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def push(self, kind: str, data: dict[str, Any]) -> None:
        """Hand an event to the loop (called from the worker thread)."""
        self._put((kind, data))

    def end(self) -> None:
        self._put(None)

    def _put(self, item: Event | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped and nobody is listening
            self.cancel()

    def cancel(self) -> None:
        """Stop the generation at its next step; harmless once it has ended."""
        self.cancelled.set()

    async def next_event(self) -> Event | None:
        """The next event, or None when the job has ended."""
        return await self._queue.get()

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.next_event()) is not None:
            yield event


@dataclass(frozen=True)
class PlannedRow:
    """One row of a request's batch: what the page calls it and the steering it runs (None: the baseline)."""

    label: str
    run: Steering | None
    strength: float | None = None
    control: Control | None = None

    def head(self, row: int) -> dict[str, Any]:
        return {"row": row, "label": self.label, "strength": self.strength, "control": self.control}


def plan_rows(body: SteerIn, directions: Mapping[int, Direction]) -> tuple[list[PlannedRow], Sweep | None]:
    """The baseline, then the steered run and its controls, or one row per sweep strength; and the sweep
    when the request is one. Raises SteeringError for a steering the library refuses."""
    steering, baseline = body.steering(directions), PlannedRow("baseline", None)
    if body.strengths:
        sweep = Sweep(steering, tuple(body.strengths))
        return [baseline, *(PlannedRow(f"strength {s:g}", run, s) for s, run in zip(body.strengths, sweep.runs[1:]))], sweep
    rows = [baseline, PlannedRow("steered", steering)]
    if body.controls:
        rows += [PlannedRow("control: random direction", steering.as_control("random", body.seed), control="random"),
                 PlannedRow("control: sign flipped", steering.as_control("flipped"), control="flipped")]
    return rows, None


def error_detail(err: GenerationError) -> str | list[dict[str, Any]]:
    """The message, or FastAPI's list of field errors when the library named the request field at fault."""
    field = err.field if isinstance(err, SteeringError) else None
    if field is None:
        return str(err)
    return [{"type": "value_error", "loc": ["body", *field.split(".")], "msg": str(err)}]


class SteeringWorker:
    """Runs steering requests one at a time on a dedicated thread, taking the model from ModelCache per step."""

    def __init__(self, models: ModelCache, limits: Limits, retry_after: int, judge: EndpointConfig | None = None):
        self.models, self.limits, self.retry_after, self.judge = models, limits, retry_after, judge
        self._slot = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steer")
        self._current: Job | None = None

    @property
    def busy(self) -> bool:
        return self._slot.locked()

    def start(self, sae: Sae, body: SteerIn, directions: Mapping[int, Direction], concept: str | None = None) -> Job:
        """Begin a generation and return its job at once; WorkerBusy when one is already running.
        `directions` holds the vector of every saved direction the request names; `concept` (the steered
        features' labels) is what a judge rates each row's text against."""
        if not self._slot.acquire(blocking=False):
            raise WorkerBusy(self.retry_after)
        job = self._current = Job(asyncio.get_running_loop())
        try:
            self._pool.submit(self._run, job, sae, body, directions, concept)
        except RuntimeError:  # the pool is shut down: the app is stopping
            self._slot.release()
            raise
        return job

    def close(self) -> None:
        """Stop the running generation and the thread (the app is shutting down)."""
        if self._current is not None:
            self._current.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, sae: Sae, body: SteerIn, directions: Mapping[int, Direction],
             concept: str | None) -> None:
        """The thread's body: every failure becomes an error event; the slot frees before the job ends."""
        try:
            if not self.models.status(model_spec(sae)).ready:
                job.push("loading", {"model": model_spec(sae)})
            self._generate(job, self.models.load(sae), body, directions, concept)
        except GenerationError as err:
            job.push("error", {"status": 422, "detail": error_detail(err)})
        except InferenceUnavailable as err:
            job.push("error", {"status": 503, "detail": str(err)})
        except Exception:
            log.exception("steering generation failed")
            job.push("error", {"status": 500, "detail": "the generation failed; the server log has the details"})
        finally:
            self._slot.release()
            job.end()

    def _generate(self, job: Job, loaded: RunnableSae, body: SteerIn, directions: Mapping[int, Direction],
                  concept: str | None) -> None:
        """Validate, stream every row's tokens, then measure every row; all errors come before tokens."""
        lm, sae = loaded.lm, loaded.sae
        rows, sweep = plan_rows(body, directions)
        runs = [r.run for r in rows]
        prompt_ids = encode_prompt(lm.tokenizer, body.prompt, chat=not body.raw, limits=self.limits)
        target_ids = encode_target(lm, body.target) if body.target else None
        sampling = body.sampling()
        events = stream_steered(lm, sae, prompt_ids, runs, sampling, self.limits, job.cancelled, self.models.turn,
                                keep_logp(lm, len(runs), sampling))
        job.push("start", {"prompt_tokens": len(prompt_ids), "rows": [r.head(k) for k, r in enumerate(rows)]})
        generations = collect(_relayed(job, events), len(runs))
        if job.cancelled.is_set():
            return
        with self.models.turn():
            measures = measure_rows(lm, sae, prompt_ids, runs, generations, target_ids)
        points = [SweepPoint(r.strength, g, m) for r, g, m in zip(rows, generations, measures)]
        strongest = strongest_within(points, body.perplexity_factor) if sweep else None
        verdicts, judge_error = self._judged(job, generations, concept)
        out = [RowOut.measured(m, **r.head(k), text=g.text, token_ids=g.token_ids, finished=g.finished,
                               fluent_strongest=strongest is not None and r.strength == strongest,
                               judge_concept=v.concept if v else None, judge_fluency=v.fluency if v else None)
               for k, (r, g, m, v) in enumerate(zip(rows, generations, measures, verdicts))]
        job.push("done", {"prompt_tokens": len(prompt_ids), "strongest_fluent": strongest, "judge_error": judge_error,
                          "rows": [row.model_dump() for row in out]})

    def _judged(self, job: Job, generations: list[Generation], concept: str | None
                ) -> tuple[list[Verdict | None], str | None]:
        """Each row's verdict when a judge is configured; the first failure ends the judging and is reported
        beside the rows (a judge that is down must not lose the run)."""
        verdicts: list[Verdict | None] = [None] * len(generations)
        if self.judge is None:
            return verdicts, None
        job.push("judging", {"rows": len(generations)})
        try:
            for k, g in enumerate(generations):
                if job.cancelled.is_set():
                    break
                verdicts[k] = judge(self.judge, g.text, concept)
        except JudgeError as err:
            return verdicts, str(err)
        return verdicts, None


def _relayed(job: Job, events: Iterator[TokenEvent]) -> Iterator[TokenEvent]:
    """Pass each token on to the loop as it is drawn, and on to the caller."""
    for event in events:
        job.push("token", {"row": event.row, "step": event.step, "text": event.text, "finished": event.finished})
        yield event

