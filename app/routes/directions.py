"""Raw steering directions: the mean difference of two prompt sets' activations at an SAE's site, saved by
name and steerable like a feature (`InterventionIn.direction`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from sae_core.contrast import ContrastError, contrast

from .. import crud
from ..deps import CsrfChecked, LabellerDep, ReaderDep, SaeId, SessionDep, render
from ..models import Sae, SteeringDirection, User
from ..presenters.contrast import split_texts
from ..steer_schemas import DirectionIn, DirectionOut

router = APIRouter(tags=["steering"])


def make_direction(request: Request, session: SessionDep, sae: Sae, user: User, body: DirectionIn) -> SteeringDirection:
    """Read both sets and save A minus B; a name in use is refused before the model runs."""
    if any(d.name == body.name for d in crud.steering_directions(session, sae_id=sae.id)):
        raise crud.Conflict(f"this SAE already has a direction named {body.name!r}")
    try:
        with request.app.state.models.hold(sae) as loaded:
            sets = contrast(loaded.lm, loaded.sae, body.a, body.b)
    except ContrastError as err:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", err.field), "msg": str(err),
                                       "input": None}]) from None
    vector_D = sets.direction_D()
    return crud.save_direction(session, sae_id=sae.id, name=body.name, vector=vector_D.tolist(),
                               norm=float(vector_D.norm()), texts={"a": body.a, "b": body.b}, owner_id=user.id)


@router.get("/api/saes/{sae_id}/directions", response_model=list[DirectionOut])
def directions(session: SessionDep, _user: ReaderDep, sae_id: SaeId) -> list[DirectionOut]:
    """The SAE's saved steering directions, by name."""
    return [DirectionOut.of(d) for d in crud.steering_directions(session, sae_id=crud.find_sae(session, ref=sae_id).id)]


@router.post("/api/saes/{sae_id}/directions", response_model=DirectionOut, status_code=201,
             dependencies=[CsrfChecked],
             responses={409: {"description": "The name is taken"}, 422: {"description": "A set too small"}})
def save_direction(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId,
                   body: DirectionIn) -> DirectionOut:
    """Save the mean site activation of prompts A minus that of prompts B as a named direction."""
    return DirectionOut.of(make_direction(request, session, crud.find_sae(session, ref=sae_id), user, body))


@router.post("/saes/{sae_id}/directions", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[CsrfChecked])
def save_direction_form(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId,
                        name: Annotated[str, Form(max_length=200)] = "",
                        a: Annotated[str, Form(max_length=1_000_000)] = "",
                        b: Annotated[str, Form(max_length=1_000_000)] = ""):
    """The contrast page's "save A minus B as a direction": a line saying it is saved, with a link to steer."""
    sae = crud.find_sae(session, ref=sae_id)
    try:
        body = DirectionIn(name=name, a=split_texts(a), b=split_texts(b))
    except ValidationError as err:
        raise RequestValidationError([e | {"loc": ("body", *e["loc"])} for e in err.errors()]) from None
    saved = DirectionOut.of(make_direction(request, session, sae, user, body))
    return render(request, "_direction_saved.html", {"d": saved})
