"""The steering playground: the page, its feature picker, POST /api/steer and saved experiments.

POST /api/steer answers an event stream (Accept: text/event-stream; what the page reads) or, for scripts,
one JSON document when the run is over. Errors found before the first token (bad prompt, limits, unknown
feature) come back as a plain 422/404/503 JSON answer, never as a half-opened stream, with one exception: while
the model loads (a first load takes half a minute) the stream opens at once with a `loading` event, so the
page can say so, and an error found after the load comes as an `error` event. A client that disconnects, in
either mode, stops its generation before the next token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from sae_core.steering import MODES, Direction, Intervention, SteeringError

from .. import charts, crud
from ..deps import CsrfChecked, LabellerDep, ReaderDep, SaeId, SearchQuery, SessionDep, render
from ..models import Sae, User
from ..presenters.model_state import model_status
from ..presenters.steer_measures import measures_views, perplexity_chart
from ..services.inference import model_spec
from ..services.steering import Event, Job
from ..steer_schemas import ExperimentOut, InterventionIn, RowOut, SteerIn, SteerOut, experiment_url

router = APIRouter(tags=["steering"])
ExperimentId = Annotated[int, Path(ge=1, lt=2**31, description="Id of the saved experiment.")]
PICKER_SIZE = 12
SAVED_SHOWN = 20
DISCONNECT_POLL_S = 0.5
"""How often a JSON (non-streaming) steering request checks that its client is still connected."""


@router.get("/saes/{sae_id}/steer", response_class=HTMLResponse, include_in_schema=False)
def playground(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId,
               feature: Annotated[int | None, Query(ge=0, lt=2**31)] = None,
               experiment: Annotated[int | None, Query(ge=1, lt=2**31)] = None,
               direction: Annotated[int | None, Query(ge=1, lt=2**31)] = None,
               prompt: Annotated[str, Query(max_length=20_000)] = "", raw: bool = False,
               pin: Annotated[list[str] | None, Query(max_length=32, description="FEATURE:MODE[:VALUE]")] = None):
    """The form, prefilled from a saved experiment, with one feature (the feature page's steer link), one saved
    direction, or a prompt and pinned features (a circuit's "open in the steering playground")."""
    sae = crud.find_sae(session, ref=sae_id)
    if experiment is not None:
        form = ExperimentOut.of(*crud.find_steering(session, sae_id=sae.id, experiment_id=experiment)).request()
    else:
        brief = crud.feature_briefs(session, sae_id=sae.id, indices=[feature]).get(feature) if feature is not None else None
        start = [InterventionIn(feature=feature, mode="add", value=add_value(brief))] if feature is not None else []
        start += [InterventionIn(direction=direction, mode="add", value=1.0)] if direction is not None else []
        start += [pinned(spec) for spec in pin or []]
        form = SteerIn.model_construct(sae_id=sae.id, prompt=prompt, raw=raw, interventions=start)
    briefs = crud.feature_briefs(session, sae_id=sae.id,
                                 indices=[i.feature for i in form.interventions if i.feature is not None])
    return render(request, "steer.html", {
        "sae": sae, "form": form, "briefs": briefs, "modes": MODES, "model": model_status(request, model_spec(sae)),
        "directions": {d.id: d for d in crud.steering_directions(session, sae_id=sae.id)},
        "experiments": crud.steering_experiments(session, sae_id=sae.id, limit=SAVED_SHOWN)})


def pinned(spec: str) -> InterventionIn:
    """A `pin` of the playground's URL as an intervention, or a 422 saying how to write one."""
    try:
        parsed = Intervention.parse(spec)
    except SteeringError as err:
        raise RequestValidationError([{"loc": ("query", "pin"), "msg": str(err), "type": "value_error"}]) from None
    assert isinstance(parsed.feature, int)  # parse reads a feature index, never a direction
    return InterventionIn(feature=parsed.feature, mode=parsed.mode, value=parsed.value)


@router.get("/saes/{sae_id}/steer/experiments", response_class=HTMLResponse, include_in_schema=False)
def saved_experiments(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """The playground's list of saved experiments alone, which the page reloads after a run is saved."""
    sae = crud.find_sae(session, ref=sae_id)
    return render(request, "_steer_experiments.html",
                  {"sae": sae, "experiments": crud.steering_experiments(session, sae_id=sae.id, limit=SAVED_SHOWN)})


@router.get("/saes/{sae_id}/steer/features", response_class=HTMLResponse, include_in_schema=False)
def picker(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId,
           q: SearchQuery = ""):
    """Features matching a label or top-token search, and the feature with that index when q is a number."""
    sae = crud.find_sae(session, ref=sae_id)
    q = q.strip()
    rows, _ = crud.list_features(session, sae_id=sae.id, query=q, limit=PICKER_SIZE) if q else ([], 0)
    index = [int(q)] if q.isdigit() and int(q) < sae.d_sae else []
    matches = index + [r.feature_index for r in rows if r.feature_index not in index]
    briefs = crud.feature_briefs(session, sae_id=sae.id, indices=matches)
    return render(request, "_steer_picker.html", {"matches": [m for m in matches if m in briefs], "briefs": briefs, "q": q})


def add_value(brief: crud.FeatureBrief | None) -> float:
    """The value `add` starts at: the feature's largest recorded activation (two significant digits), which is
    on the scale the feature works at; 4 for a feature that never fired. steer.js does the same for a pick."""
    return float(f"{brief.max_act:.2g}") if brief is not None and brief.max_act > 0 else 4.0


def steer_sae(session: SessionDep, body: SteerIn) -> Sae:
    """The SAE a request names (404 if none), looked up on a worker thread, not on the event loop."""
    return crud.find_sae(session, ref=body.sae_id)


@dataclass(frozen=True)
class SteerContext:
    """What a request names that lives in the store: saved directions' vectors, and the labels a judge rates
    the text against."""

    directions: dict[int, Direction]
    concept: str | None


def steer_context(session: SessionDep, body: SteerIn) -> SteerContext:
    """The request's directions (those the SAE has) and concept, looked up on a worker thread."""
    found = crud.directions_by_id(session, sae_id=body.sae_id, ids=body.direction_ids())
    features = [i.feature for i in body.interventions if i.feature is not None]
    labels = crud.label_texts(session, sae_id=body.sae_id, indices=features)
    concepts = [labels[f] for f in features if labels.get(f)] + [d.name for d in found.values()]
    return SteerContext({k: Direction(d.name, tuple(d.vector)) for k, d in found.items()},
                        "; ".join(concepts) or None)


@router.post("/api/steer", response_model=SteerOut, dependencies=[CsrfChecked],
             responses={404: {"description": "No such SAE"}, 422: {"description": "Bad request or over a limit"},
                        429: {"description": "A generation is running; see Retry-After"}})
async def steer(request: Request, user: LabellerDep, body: SteerIn, sae: Annotated[Sae, Depends(steer_sae)],
                context: Annotated[SteerContext, Depends(steer_context)]):
    """Generate the baseline and the steered rows from one prompt and seed, streamed or as one JSON answer;
    every row comes back measured (feature effect, perplexity, KL from the unsteered model, target)."""
    if errors := body.range_errors(sae.d_sae, context.directions):
        raise RequestValidationError(errors)
    job = request.app.state.steering.start(sae, body, context.directions, context.concept)
    streaming = "text/event-stream" in request.headers.get("accept", "")
    first = await job.next_event()
    while not streaming and first is not None and first[0] == "loading":
        first = await job.next_event()
    if first is None or first[0] == "error":  # every check fails before the first token
        job.cancel()
        return _error(first[1] if first else {})
    finish = _Finisher(request, user, body)
    if streaming:  # opened at once while the model loads, to say so; a later check's error is then an event
        return JobStream(job, _event_stream(job, first, finish))
    try:
        kind, data = await _last_event(request, job, first)
    finally:
        job.cancel()
    return SteerOut(**await finish(data)) if kind == "done" else _error(data)


async def _last_event(request: Request, job: Job, first: Event) -> Event:
    """Wait out a run for a client that wants one answer; the run stops if the client leaves meanwhile."""
    watcher = asyncio.create_task(_cancel_when_gone(request, job))
    last = first
    try:
        async for event in job.events():
            last = event
    finally:
        watcher.cancel()
    return ("error", {"status": 499, "detail": "the client went away"}) if job.cancelled.is_set() else last


async def _cancel_when_gone(request: Request, job: Job) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    job.cancel()


def _error(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"detail": data.get("detail", "the generation stopped without output")},
                        status_code=data.get("status", 500))


class _Finisher:
    """Completes a finished run's data with the saved experiment's permalink (None unless asked to save)."""

    def __init__(self, request: Request, user: User, body: SteerIn):
        self.request, self.user, self.body = request, user, body

    async def __call__(self, done: dict[str, Any]) -> dict[str, Any]:
        rows = [RowOut(**row) for row in done["rows"]]
        url = await run_in_threadpool(self._save, rows) if self.body.save else None
        return done | {"experiment_url": url}

    def _save(self, rows: list[RowOut]) -> str:
        with self.request.app.state.session_factory() as session:
            experiment = crud.save_steering(session, owner_id=self.user.id, **self.body.experiment_fields(rows))
            return experiment_url(experiment.sae_id, experiment.id)


def sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def _event_stream(job: Job, first: Event, finish: _Finisher) -> AsyncIterator[str]:
    try:
        yield sse(*first)
        async for kind, data in job.events():
            if kind == "done":
                data = await finish(data)
                rows = [RowOut(**row) for row in data["rows"]]
                data["chart"] = str(sweep_chart(rows))
                data["perplexity_chart"] = perplexity_chart(rows, finish.body.perplexity_factor)
                data["measures"] = measures_html(finish.request, finish.body.sae_id, rows)
            yield sse(kind, data)
    finally:
        job.cancel()


def measures_html(request: Request, sae_id: int, rows: list[RowOut]) -> dict[int, str]:
    """Each row's measures as the experiment page shows them, for the playground to place under its row."""
    template = request.app.state.templates.get_template("_steer_measures.html")
    return {view.row.row: template.render(m=view, sae={"id": sae_id}) for view in measures_views(rows)}


class JobStream(StreamingResponse):
    """An event stream that cancels its job however the response ends: finished, failed or client gone."""

    def __init__(self, job: Job, content: AsyncIterator[str]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def sweep_chart(rows: list[RowOut]) -> str:
    """The measured effect against strength: the target's log-probability when there is one, else the KL."""
    swept = sorted(((r.strength, r) for r in rows if r.strength is not None), key=lambda point: point[0])
    if not swept:
        return ""
    by_target = all(r.target_logprob is not None for _, r in swept)
    y_name = "log p(target)" if by_target else "KL from baseline"
    effects = [(s, r.target_logprob if by_target else r.kl) for s, r in swept]
    return charts.line([(s, y) for s, y in effects if y is not None],  # a sweep's rows all have both
                       title=f"{y_name} against strength", x_label="strength", y_label=y_name)


@router.get("/saes/{sae_id}/steer/experiments/{experiment_id}", response_class=HTMLResponse, include_in_schema=False)
def experiment_page(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, experiment_id: ExperimentId):
    """A saved experiment's permalink: what was asked, who ran it when, and every row's output."""
    sae = crud.find_sae(session, ref=sae_id)
    out = ExperimentOut.of(*crud.find_steering(session, sae_id=sae.id, experiment_id=experiment_id))
    briefs = crud.feature_briefs(session, sae_id=sae.id,
                                 indices=[i["feature"] for i in out.interventions if i.get("feature") is not None])
    return render(request, "experiment.html", {
        "sae": sae, "x": out, "chart": sweep_chart(out.rows), "measures": measures_views(out.rows) if out.rows else [],
        "perplexity_chart": perplexity_chart(out.rows, out.params.get("perplexity_factor", 2.0)), "briefs": briefs})


@router.get("/api/saes/{sae_id}/steer/experiments/{experiment_id}", response_model=ExperimentOut,
            responses={404: {"description": "No such experiment"}})
def experiment(session: SessionDep, _user: ReaderDep, sae_id: SaeId, experiment_id: ExperimentId) -> ExperimentOut:
    return ExperimentOut.of(*crud.find_steering(session, sae_id=sae_id, experiment_id=experiment_id))
