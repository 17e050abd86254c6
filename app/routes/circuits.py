"""Circuits: the attribution page of an SAE set, its jobs, saved graphs (permalinks) and the attribution API."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError

from sae_core.attribution import AttributionError, next_tokens
from sae_core.attribution.frozen import FreezeError
from sae_core.attribution.replacement import ReplacementError
from sae_core.attribution.replacement_command import top_tokens

from .. import crud
from ..attribution_schemas import (
    AttributionIn,
    AttributionOut,
    PinsIn,
    ReplacementIn,
    as_422,
    graph_url,
)
from ..deps import CsrfChecked, LabellerDep, ReaderDep, SessionDep, StoredText, render
from ..models import AttributionGraphRow
from ..presenters.circuits import circuits_page, graph_page, neuronpedia_export, transcoder_set
from ..presenters.replacement import (
    REPLACEMENT,
    graph_view,
    replacement_export,
    replacement_page,
    stored_graph,
    thresholds,
)
from ..services.attribution import AttributionService, ReplacementSpec, RunSpec, replacement_model

router = APIRouter(tags=["attribution"])
SetRef = Annotated[str, Path(max_length=200, description="A set of SAEs, by id or name.")]
GraphId = Annotated[int, Path(ge=1, lt=2**31, description="Id of the saved graph.")]
Threshold = Annotated[float | None, Query(gt=0, le=1)]
NeuronpediaName = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,128}$",
                                              description="Letters, digits, '_', '.' or '-' (as Neuronpedia takes).")]
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such SAE or graph"},
                                           422: {"description": "Bad request: the field at fault is named"}}


def service(request: Request) -> AttributionService:
    return request.app.state.attribution


REPLACEMENT_ERRORS = (AttributionError, ReplacementError, FreezeError)
BodyT = TypeVar("BodyT", bound=BaseModel)


def run_spec(session: SessionDep, body: AttributionIn, owner_id: int | None) -> RunSpec:
    sae_set, saes = crud.set_saes(session, ref=body.sae_set)
    if transcoder_set(saes):
        raise as_422(AttributionError("sae", f"the set {sae_set.name!r} holds transcoders: draw its replacement-model "
                                             "graph instead (POST /api/replacement-graphs, or the set's circuits page)"))
    return RunSpec(sae_set.id, saes, body.request(), body.config(), owner_id)


def replacement_spec(session: SessionDep, body: ReplacementIn, owner_id: int | None) -> ReplacementSpec:
    sae_set, saes = crud.set_saes(session, ref=body.sae_set)
    if not transcoder_set(saes):
        others = ", ".join(f"{s.name} ({s.architecture})" for s in saes if not transcoder_set([s]))
        raise as_422(AttributionError("sae", f"a replacement-model graph needs a transcoder per layer, but the set "
                                             f"{sae_set.name!r} also holds {others}"))
    return ReplacementSpec(sae_set.id, saes, body.prompt, body.config(), body.target_texts(), body.node_threshold,
                           body.edge_threshold, owner_id)


def validated(model: type[BodyT], form: dict[str, Any]) -> BodyT:
    """The page's form as the API's body, its errors located in the body as the API's are."""
    try:
        return model.model_validate(form)
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None


def replacement_row(session: SessionDep, graph_id: int, set_ref: str | None = None) -> AttributionGraphRow:
    """A saved replacement graph (of the set, when one is named)."""
    set_id = None if set_ref is None else crud.find_sae_set(session, ref=set_ref).id
    row = crud.find_graph(session, graph_id=graph_id, set_id=set_id)
    if row.method != REPLACEMENT:
        raise crud.NotFound(f"graph {graph_id} is not a replacement-model graph")
    return row


@router.get("/saes/{set_ref}/circuits", response_class=HTMLResponse, include_in_schema=False)
def circuits(request: Request, session: SessionDep, _user: ReaderDep, set_ref: SetRef):
    """The form (prompt, target picker, settings) and the set's saved graphs."""
    return render(request, "circuits.html", circuits_page(session, set_ref))


@router.post("/saes/{set_ref}/circuits/next-tokens", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[CsrfChecked])
def target_picker(request: Request, session: SessionDep, _user: LabellerDep, set_ref: SetRef,
                  prompt: Annotated[StoredText, Form(min_length=1, max_length=4000)]):
    """The model's top next tokens after the prompt, as buttons that fill in the target."""
    _set, saes = crud.set_saes(session, ref=set_ref)
    with request.app.state.models.hold(saes[0]) as loaded:
        try:
            tokens = next_tokens(loaded.lm, prompt)
        except AttributionError as err:
            raise as_422(err) from None
    return render(request, "_circuits_targets.html", {"tokens": tokens})


@router.post("/saes/{set_ref}/circuits/jobs", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[CsrfChecked])
async def start(request: Request, session: SessionDep, user: LabellerDep, set_ref: SetRef):
    """Queue a run from the page's form; the answer polls the job until the graph's page can open."""
    form = {k: v for k, v in (await request.form()).items() if k != "csrf_token" and v != ""} | {"sae_set": set_ref}
    _set, saes = crud.set_saes(session, ref=set_ref)
    spec: RunSpec | ReplacementSpec
    if transcoder_set(saes):
        spec = replacement_spec(session, validated(ReplacementIn, form), user.id)
    else:
        spec = run_spec(session, validated(AttributionIn, form), user.id)
    job = service(request).start(spec)
    return render(request, "_circuits_job.html", {"job": job, "set_id": spec.set_id})


@router.get("/saes/{set_ref}/circuits/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
def job_status(request: Request, session: SessionDep, _user: LabellerDep, set_ref: SetRef,
               job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]):
    """The job's progress; once its graph is saved, htmx is sent to the graph's permalink."""
    sae_set = crud.find_sae_set(session, ref=set_ref)
    job = service(request).job(job_id)
    if job is None:
        raise crud.NotFound(f"no attribution job {job_id} (the server may have restarted)")
    if job.graph_id is not None:
        return Response(status_code=200, headers={"HX-Redirect": graph_url(sae_set.id, job.graph_id)})
    return render(request, "_circuits_job.html", {"job": job, "set_id": sae_set.id})


@router.get("/saes/{set_ref}/circuits/{graph_id}", response_class=HTMLResponse, include_in_schema=False)
def graph(request: Request, session: SessionDep, _user: ReaderDep, set_ref: SetRef, graph_id: GraphId,
          node_threshold: Threshold = None, edge_threshold: Threshold = None):
    """A saved graph: drawn, prunable, with pins for the steering playground (and, for a replacement graph, for
    rerunning the model with them)."""
    sae_set = crud.find_sae_set(session, ref=set_ref)
    row = crud.find_graph(session, graph_id=graph_id, set_id=sae_set.id)
    if row.method == REPLACEMENT:
        return render(request, "circuit_replacement.html", replacement_page(session, row, node_threshold,
                                                                            edge_threshold))
    return render(request, "circuit.html", graph_page(session, row))


@router.post("/saes/{set_ref}/circuits/{graph_id}/pins", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[CsrfChecked])
async def rerun_pinned(request: Request, session: SessionDep, _user: LabellerDep, set_ref: SetRef, graph_id: GraphId):
    """The replacement model rerun on the graph's prompt with the pinned features set: the next tokens before and
    after."""
    row = replacement_row(session, graph_id, set_ref)
    form = {k: v for k, v in (await request.form()).items() if k != "csrf_token" and v != ""}
    body = validated(PinsIn, form)
    pins = body.pinned()
    saes = [crud.find_sae(session, ref=sae_id) for sae_id in row.sae_ids]
    with request.app.state.models.hold_all(saes) as loaded:
        try:
            rm = replacement_model(loaded, row.prompt)
            after = rm.intervene(pins, freeze_attention=body.attention == "frozen")[-1]
        except REPLACEMENT_ERRORS as err:
            raise as_422(AttributionError("pins", str(err).splitlines()[0])) from None
        tokenizer = loaded[0].lm.tokenizer
        before_text, after_text = top_tokens(tokenizer, rm.logits_TV[-1]), top_tokens(tokenizer, after)
    return render(request, "_circuits_pinned.html", {"before": before_text, "after": after_text, "pins": pins,
                                                      "attention": body.attention, "value": body.value})


@router.post("/api/attribution", response_model=AttributionOut, responses=ERRORS, dependencies=[CsrfChecked])
def api_attribution(request: Request, session: SessionDep, user: LabellerDep, body: AttributionIn):
    """Run attribution on a set of SAEs now, save the graph and return it with its permalink."""
    spec = run_spec(session, body, user.id)
    try:
        result = service(request).compute(spec)
    except AttributionError as err:
        raise as_422(err) from None
    graph_id = service(request).save(spec, result)
    return AttributionOut(id=graph_id, url=graph_url(spec.set_id, graph_id), graph=result.to_dict())


@router.post("/api/replacement-graphs", response_model=AttributionOut, responses=ERRORS, dependencies=[CsrfChecked])
def api_replacement_graph(request: Request, session: SessionDep, user: LabellerDep, body: ReplacementIn):
    """Build a prompt's replacement-model graph on a set of transcoders (one per layer) now, save it and return it
    (its adjacency stays in the store: GET /api/graphs/{id}/view prunes it)."""
    spec = replacement_spec(session, body, user.id)
    try:
        stored = service(request).compute_replacement(spec)
    except REPLACEMENT_ERRORS as err:
        raise as_422(err if isinstance(err, AttributionError) else AttributionError("sae", str(err))) from None
    graph_id = service(request).save_replacement(spec, stored)
    return AttributionOut(id=graph_id, url=graph_url(spec.set_id, graph_id), graph=stored[0])


@router.get("/api/graphs/{graph_id}/view", responses=ERRORS)
def api_graph_view(session: SessionDep, _user: ReaderDep, graph_id: GraphId, node_threshold: Threshold = None,
                   edge_threshold: Threshold = None) -> dict[str, Any]:
    """A replacement graph pruned at the thresholds (default: the run's), from its stored adjacency: the nodes and
    links its page draws, and the pruned graph's scores."""
    row = replacement_row(session, graph_id)
    return graph_view(session, row, stored_graph(row), *thresholds(row, node_threshold, edge_threshold))


@router.get("/api/graphs/{graph_id}", response_model=AttributionOut, responses=ERRORS)
def api_graph(session: SessionDep, _user: ReaderDep, graph_id: GraphId):
    """A saved graph."""
    row = crud.find_graph(session, graph_id=graph_id)
    return AttributionOut(id=row.id, url=graph_url(row.set_id, row.id), graph=row.graph)


@router.get("/api/graphs/{graph_id}/neuronpedia", responses=ERRORS)
def api_graph_neuronpedia(session: SessionDep, _user: ReaderDep, graph_id: GraphId, node_threshold: Threshold = None,
                          edge_threshold: Threshold = None, model_id: NeuronpediaName = None,
                          source_set: NeuronpediaName = None) -> dict[str, Any]:
    """A saved graph, pruned at the thresholds (default: the run's), in Neuronpedia's graph JSON; `model_id` is the
    model's id on Neuronpedia (default: made from its name), `source_set` the set holding the SAEs' features there."""
    row = crud.find_graph(session, graph_id=graph_id)
    if row.method == REPLACEMENT:
        return replacement_export(session, row, model_id=model_id, node_threshold=node_threshold,
                                  edge_threshold=edge_threshold)
    return neuronpedia_export(session, row, model_id=model_id, source_set=source_set, node_threshold=node_threshold,
                              edge_threshold=edge_threshold)
