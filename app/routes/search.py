"""Search by text: paste text, see per token the features that fire most and the model's next-token guesses."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import crud
from ..deps import ReaderDep, SaeId, SessionDep, TopN, TypedText, is_htmx, render
from ..presenters.search import token_rows

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/saes/{sae_id}/search", response_class=HTMLResponse)
def search(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, text: TypedText = "",
           n: TopN = 5):
    """The page (or, for htmx, the token fragment); the form also works without JavaScript."""
    sae = crud.find_sae(session, ref=sae_id)
    rows = token_rows(session, sae.id, request.app.state.models.run(sae, text), n) if text.strip() else []
    context = {"sae": sae, "text": text, "rows": rows, "n": n}
    return render(request, "_search_tokens.html" if is_htmx(request) else "search.html", context)
