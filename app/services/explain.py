"""Explain jobs started from the SAE page (issue 17): `saescope explain` run on a worker thread, polled for progress.

One job per SAE at a time; a second start for it is refused (crud.Conflict, a 409) rather than queued. Jobs of
different SAEs share one worker thread (as attribution runs do), so a second SAE's job waits for the first: on a
CPU two explainers at once would each run at half speed. A job is the CLI's: `plan` skips features that already
have an explanation and `run_job` commits each draft as it is finished, so a job stopped by a failure or a
restart goes on where it stopped when started again, and nothing is explained twice.

What the explainer is comes from the server's settings, never from the browser: the page picks "local" (the
model the settings name, loaded in this process) or "endpoint" (the configured URL and model). A URL typed into
the page would let an admin's browser, or a forged request riding an admin's session, make the server call any
address it can reach (its own network included) and carry the endpoint's key there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from sae_core.explain import ChatModel, ExplainConfig, ExplainerError

from .. import crud
from ..explanations import Selection, chat_model, plan, run_job
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainerChoice:
    """An explainer the SAE page offers; the settings say what it is, the page only which one."""

    title: str
    """What the page calls it (a model name; an endpoint's URL is not shown)."""
    open: Callable[[], ChatModel]


def explainer_choices(settings: Settings) -> dict[str, ExplainerChoice]:
    """The explainers the settings configure, by the key the page's form sends."""
    choices: dict[str, ExplainerChoice] = {}
    if settings.explainer_local_model:
        spec = settings.explainer_local_model
        choices["local"] = ExplainerChoice(f"{spec} (loaded on this server)",
                                           lambda: chat_model(spec, None, settings.explainer_api_key_env))
    if settings.explainer_url and settings.explainer_endpoint_model:
        url, name = settings.explainer_url, settings.explainer_endpoint_model
        choices["endpoint"] = ExplainerChoice(f"{name} (the configured endpoint)",
                                              lambda: chat_model(name, url, settings.explainer_api_key_env))
    return choices


class Stopped(Exception):
    """The server is shutting down; the job stops after its current feature."""


@dataclass
class ExplainJob:
    """One job's progress as the SAE page polls it (written by the worker thread, read by requests)."""

    sae_id: int
    explainer: str
    selection: Selection
    stage: str = "queued"
    """queued, loading the explainer, explaining, done, failed or stopped."""
    total: int | None = None
    """Features the job planned (known once it starts)."""
    done: int = 0
    error: str | None = None
    started_at: float | None = None
    """time.monotonic() when the first feature began (after loading the explainer, as the CLI counts)."""
    ended_at: float | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    @property
    def per_minute(self) -> float | None:
        """Features finished per minute of explaining, once one is."""
        if self.started_at is None or self.done == 0:
            return None
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        return self.done / max(end - self.started_at, 1e-9) * 60


class ExplainService:
    """Starts explain jobs on one worker thread, refuses a second job for an SAE, keeps each SAE's last job."""

    def __init__(self, sessions: Callable[[], Session], choices: dict[str, ExplainerChoice],
                 config: ExplainConfig | None = None):
        self.sessions, self.choices, self.config = sessions, choices, config or ExplainConfig()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self._lock = threading.Lock()
        self._jobs: dict[int, ExplainJob] = {}
        self._models: dict[str, ChatModel] = {}
        """Explainers opened by earlier jobs, kept (loading SmolLM2 takes about 20 s); only the worker uses them."""
        self._stopping = threading.Event()

    def job(self, sae_id: int) -> ExplainJob | None:
        """The SAE's running job, or its last one since the server started."""
        return self._jobs.get(sae_id)

    def start(self, sae_id: int, selection: Selection, explainer: str) -> ExplainJob:
        """Queue a job; crud.Conflict while one runs for this SAE. `explainer` is a key of `choices`."""
        choice = self.choices[explainer]
        with self._lock:
            current = self._jobs.get(sae_id)
            if current is not None and current.running:
                raise crud.Conflict(f"an explain job is already running for this SAE ({progress_text(current)}); "
                                    "wait for it to finish, then start another")
            job = self._jobs[sae_id] = ExplainJob(sae_id, choice.title, selection)
        self._pool.submit(self._run, job, explainer)
        return job

    def close(self) -> None:
        """Stop the running job after its current feature (what it finished is stored) and drop queued ones."""
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: ExplainJob, explainer: str) -> None:
        """The worker's body: every failure ends the job with its reason, never lost in the thread."""
        try:
            self._explain(job, explainer)
            job.stage = "done"
        except Stopped:
            job.stage = "stopped"
        except ExplainerError as err:
            job.stage, job.error = "failed", str(err)
        except Exception as err:
            log.exception("explain job for SAE %s failed", job.sae_id)
            job.stage, job.error = "failed", str(err).splitlines()[0] if str(err) else type(err).__name__
        finally:
            job.ended_at = time.monotonic()
            job.finished.set()

    def _explain(self, job: ExplainJob, explainer: str) -> None:
        with self.sessions() as session:
            sae = crud.find_sae(session, ref=job.sae_id)
            todo = plan(session, sae=sae, selection=job.selection)
            job.total = len(todo)
            if not todo:
                return
            job.stage = "loading the explainer"
            model = self._model(explainer)
            job.stage, job.started_at = "explaining", time.monotonic()

            def advance(_index: int) -> None:
                job.done += 1
                if self._stopping.is_set():
                    raise Stopped

            run_job(session, sae=sae, indices=todo, explainer=model, scorer=model, config=self.config,
                    on_feature=advance)

    def _model(self, explainer: str) -> ChatModel:
        if explainer not in self._models:
            self._models[explainer] = self.choices[explainer].open()
        return self._models[explainer]


def progress_text(job: ExplainJob) -> str:
    """"12 / 40 features" (or "planning" before the job has counted them)."""
    return "planning" if job.total is None else f"{job.done} / {job.total} features"
