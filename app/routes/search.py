"""Search by text: paste text, see per token the features that fire most and the model's next-token guesses."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import crud
from ..deps import ReaderDep, SaeId, SessionDep, TopN, TypedText, is_htmx, render
from ..presenters.model_state import model_status, waiting_for_model
from ..presenters.search import Hide, search_context
from ..services.inference import model_spec

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/saes/{sae_id}/search", response_class=HTMLResponse)
def search(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, text: TypedText = "",
           n: TopN = 5, hide_dense: bool = False, hide_start: bool = False):
    """The page (or, for htmx, the token fragment); the form also works without JavaScript."""
    sae = crud.find_sae(session, ref=sae_id)
    if text.strip() and (waiting := waiting_for_model(request, sae, is_htmx(request))):
        return render(request, "_model_state.html", waiting)
    hide = Hide(dense=hide_dense, start=hide_start)
    found = (search_context(session, sae.id, request.app.state.models.run(sae, text), n, hide) if text.strip()
             else {"rows": [], "ranked": [], "briefs": {}})
    context = {"sae": sae, "text": text, "n": n, "hide": hide, "model": model_status(request, model_spec(sae)), **found}
    return render(request, "_search_tokens.html" if is_htmx(request) else "search.html", context)
