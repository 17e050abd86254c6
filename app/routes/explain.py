"""Explain jobs from the SAE page (issue 17): an admin starts one (CSRF-checked), anyone who may read polls it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import AdminDep, CsrfChecked, ReaderDep, SaeId, SessionDep, Storable, is_htmx, render
from ..explanations import Selection, parse_range
from ..models import Sae
from ..presenters.explain_jobs import explain_section
from ..services.explain import ExplainService

router = APIRouter(tags=["pages"], include_in_schema=False)

FeatureRange = Annotated[str, Form(max_length=40, description="START:STOP, or empty for every feature."), Storable]
ExplainerKey = Annotated[str, Form(max_length=32, description="local or endpoint, as the settings configure.")]


def service(request: Request) -> ExplainService:
    return request.app.state.explain


@router.get("/saes/{sae_id}/explain", response_class=HTMLResponse)
def progress(request: Request, session: SessionDep, user: ReaderDep, sae_id: SaeId):
    """The explain section: the job's progress (it polls itself while the job runs) and, for admins, the form."""
    sae = crud.find_sae(session, ref=sae_id)
    return render(request, "_explain_job.html", explain_section(session, service(request), sae_id=sae.id, user=user))


@router.post("/saes/{sae_id}/explain", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start(request: Request, session: SessionDep, user: AdminDep, sae_id: SaeId, features: FeatureRange = "",
          unlabelled: Annotated[bool, Form()] = False, explainer: ExplainerKey = ""):
    """Start drafting explanations of the SAE's features in the background; 422 naming the field at fault, 409
    while a job runs for this SAE."""
    sae = crud.find_sae(session, ref=sae_id)
    try:
        service(request).start(sae.id, _selection(sae, features.strip(), unlabelled), _explainer(request, explainer))
    except (Refused, crud.Conflict) as err:
        if not is_htmx(request):
            raise HTTPException(_status(err), str(err)) from None
        form = {"features": features, "unlabelled": unlabelled, "explainer": explainer}
        context = explain_section(session, service(request), sae_id=sae.id, user=user, message=str(err), form=form)
        return render(request, "_explain_job.html", context, status_code=_status(err))
    if not is_htmx(request):
        return RedirectResponse(f"/saes/{sae.id}", status_code=303)
    return render(request, "_explain_job.html", explain_section(session, service(request), sae_id=sae.id, user=user))


class Refused(ValueError):
    """Bad input to the form (422); the message starts with the field's name."""


def _status(err: Exception) -> int:
    return 409 if isinstance(err, crud.Conflict) else 422


def _selection(sae: Sae, features: str, unlabelled: bool) -> Selection:
    try:
        selection = parse_range(features, unlabelled) if features else Selection(unlabelled_only=unlabelled)
    except ValueError as err:
        raise Refused(str(err)) from None
    if selection.start >= sae.d_sae:
        raise Refused(f"features {features!r} starts past the SAE's last feature, {sae.d_sae - 1}")
    return selection


def _explainer(request: Request, key: str) -> str:
    choices = service(request).choices
    if key not in choices:
        offered = " or ".join(repr(k) for k in choices) or "none: the settings configure no explainer"
        raise Refused(f"explainer {key!r} is not one this server offers ({offered})")
    return key
