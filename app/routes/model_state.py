"""The model's status as a fragment: the note on "test it", search by text and steering polls it while the
model loads, and it says why when the load failed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import crud
from ..deps import ReaderDep, SaeId, SessionDep, render
from ..presenters.model_state import model_status
from ..services.inference import model_spec

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/saes/{sae_id}/model", response_class=HTMLResponse)
def model_state(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    sae = crud.find_sae(session, ref=sae_id)
    return render(request, "_model_state.html", {"sae": sae, "model": model_status(request, model_spec(sae))})
