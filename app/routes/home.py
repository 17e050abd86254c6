"""The SAEs in the store (`/`) and one SAE's overview (`/saes/{sae_id}`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import crud
from ..deps import ReaderDep, SessionDep, render

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, _user: ReaderDep):
    return render(request, "index.html", {"saes": crud.list_saes(session)})
