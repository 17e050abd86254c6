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
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sae_core.generation import GenerationError, Limits, TokenEvent, collect, encode_prompt
from sae_core.steering import Steering, Sweep, encode_target, stream_steered

from ..models import Sae
from ..settings import Settings
from ..steer_schemas import RowOut, SteerIn
from .inference import InferenceUnavailable, ModelCache, RunnableSae

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
"""(kind, data): start, token, done or error; see SteeringWorker._generate for each one's data."""


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


def row_labels(body: SteerIn) -> list[tuple[str, float | None]]:
    """(label, strength) of each row: the baseline first, then the steered run or one per sweep strength."""
    if body.strengths:
        return [("baseline", None), *((f"strength {s:g}", s) for s in body.strengths)]
    return [("baseline", None), ("steered", None)]


def plan_runs(body: SteerIn) -> tuple[list[Steering | None], Sweep | None]:
    """The rows' steerings (None for the baseline, then the request's steering or one per strength), and
    the sweep when the request is one; raises SteeringError for a steering the library refuses."""
    steering = body.steering()
    if not body.strengths:
        return [None, steering], None
    sweep = Sweep(steering, tuple(body.strengths))
    return sweep.runs, sweep


class SteeringWorker:
    """Runs steering requests one at a time on a dedicated thread, taking the model from ModelCache per step."""

    def __init__(self, models: ModelCache, limits: Limits, retry_after: int):
        self.models, self.limits, self.retry_after = models, limits, retry_after
        self._slot = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steer")
        self._current: Job | None = None

    @property
    def busy(self) -> bool:
        return self._slot.locked()

    def start(self, sae: Sae, body: SteerIn) -> Job:
        """Begin a generation and return its job at once; WorkerBusy when one is already running."""
        if not self._slot.acquire(blocking=False):
            raise WorkerBusy(self.retry_after)
        job = self._current = Job(asyncio.get_running_loop())
        try:
            self._pool.submit(self._run, job, sae, body)
        except RuntimeError:  # the pool is shut down: the app is stopping
            self._slot.release()
            raise
        return job

    def close(self) -> None:
        """Stop the running generation and the thread (the app is shutting down)."""
        if self._current is not None:
            self._current.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, sae: Sae, body: SteerIn) -> None:
        """The thread's body: every failure becomes an error event; the slot frees before the job ends."""
        try:
            self._generate(job, self.models.load(sae), body)
        except GenerationError as err:
            job.push("error", {"status": 422, "detail": str(err)})
        except InferenceUnavailable as err:
            job.push("error", {"status": 503, "detail": str(err)})
        except Exception:
            log.exception("steering generation failed")
            job.push("error", {"status": 500, "detail": "the generation failed; the server log has the details"})
        finally:
            self._slot.release()
            job.end()

    def _generate(self, job: Job, loaded: RunnableSae, body: SteerIn) -> None:
        """Validate, stream every row's tokens, then measure a sweep's effect; all errors come before tokens."""
        lm, sae = loaded.lm, loaded.sae
        runs, sweep = plan_runs(body)
        prompt_ids = encode_prompt(lm.tokenizer, body.prompt, chat=not body.raw, limits=self.limits)
        target_ids = encode_target(lm, body.target) if sweep and body.target else None
        events = stream_steered(lm, sae, prompt_ids, runs, body.sampling(), self.limits, job.cancelled,
                                self.models.turn)
        labels = row_labels(body)
        job.push("start", {"prompt_tokens": len(prompt_ids),
                           "rows": [{"row": r, "label": label, "strength": s} for r, (label, s) in enumerate(labels)]})
        generations = collect(_relayed(job, events), len(runs))
        if job.cancelled.is_set():
            return
        with self.models.turn():
            points = sweep.score(lm, sae, prompt_ids, generations, target_ids) if sweep else [None] * len(runs)
        rows = [RowOut(row=r, label=label, strength=s, text=g.text, token_ids=g.token_ids, finished=g.finished,
                       kl=p.kl if p else None, target_logprob=p.target_logprob if p else None)
                for r, ((label, s), g, p) in enumerate(zip(labels, generations, points))]
        job.push("done", {"prompt_tokens": len(prompt_ids), "rows": [row.model_dump() for row in rows]})


def _relayed(job: Job, events: Iterator[TokenEvent]) -> Iterator[TokenEvent]:
    """Pass each token on to the loop as it is drawn, and on to the caller."""
    for event in events:
        job.push("token", {"row": event.row, "step": event.step, "text": event.text, "finished": event.finished})
        yield event

