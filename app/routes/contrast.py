"""Contrasts: which features separate two sets of texts (`/saes/{id}/contrast`, `POST /api/contrast`).

The model is held for the whole contrast (ModelCache.hold): a steering run waits for it between two tokens.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from sae_core.contrast import Contrast, ContrastError, contrast

from .. import crud
from ..contrast_schemas import ContrastIn, ContrastOut
from ..deps import CsrfChecked, ReaderDep, SaeId, SessionDep, is_htmx, render
from ..models import Sae
from ..presenters.contrast import contrast_out, split_texts

router = APIRouter(tags=["contrast"])


def run_contrast(request: Request, sae: Sae, body: ContrastIn) -> Contrast:
    """Both sets through the model and the SAE; a set the library refuses is a 422 naming it."""
    try:
        with request.app.state.models.hold(sae) as loaded:
            return contrast(loaded.lm, loaded.sae, body.a, body.b)
    except ContrastError as err:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", err.field), "msg": str(err),
                                       "input": None}]) from None


@router.post("/api/contrast", response_model=ContrastOut, dependencies=[CsrfChecked],
             responses={404: {"description": "No such SAE"}, 422: {"description": "A set with fewer than 2 texts, "
                                                                                   "or an empty text"}})
def contrast_api(request: Request, session: SessionDep, _user: ReaderDep, body: ContrastIn) -> ContrastOut:
    """The features whose activation differs most between texts A and B: effect size and firing consistency."""
    sae = crud.find_sae(session, ref=body.sae_id)
    return contrast_out(session, sae, run_contrast(request, sae, body), body.top)


@router.get("/saes/{sae_id}/contrast", response_class=HTMLResponse, include_in_schema=False)
def contrast_page(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """The form: two boxes of texts, one per line."""
    sae = crud.find_sae(session, ref=sae_id)
    return render(request, "contrast.html", {"sae": sae, "a": "", "b": "", "top": 20, "result": None})


@router.post("/saes/{sae_id}/contrast", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[CsrfChecked])
def contrast_form(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId,
                  a: Annotated[str, Form(max_length=1_000_000)] = "", b: Annotated[str, Form(max_length=1_000_000)] = "",
                  top: Annotated[int, Form(ge=1, le=200)] = 20):
    """The page with the results (or, for htmx, the results alone); works without JavaScript."""
    sae = crud.find_sae(session, ref=sae_id)
    try:
        body = ContrastIn(sae_id=sae.id, a=split_texts(a), b=split_texts(b), top=top)
    except ValidationError as err:
        raise RequestValidationError([e | {"loc": ("body", *e["loc"])} for e in err.errors()]) from None
    result = contrast_out(session, sae, run_contrast(request, sae, body), top)
    context = {"sae": sae, "a": a, "b": b, "top": top, "result": result}
    return render(request, "_contrast_results.html" if is_htmx(request) else "contrast.html", context)
