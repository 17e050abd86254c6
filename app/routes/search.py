"""Search by text: paste text, see per token the features that fire most and the model's next-token guesses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .. import crud
from ..deps import ReaderDep, SaeId, SessionDep, is_htmx, render
from ..services.inference import TextActivations

router = APIRouter(tags=["pages"], include_in_schema=False)

SearchText = Annotated[str, Query(max_length=2000)]
TopN = Annotated[int, Query(ge=1, le=20)]


def token_rows(session, sae_id: int, result: TextActivations, n: int) -> list[dict]:
    """Per token: its piece, the strongest features (with their labels) and the likeliest next tokens."""
    tops = result.top_features(n)
    labels = crud.label_texts(session, sae_id=sae_id, indices=sorted({i for row in tops for i, _ in row}))
    return [{"piece": piece, "token_id": token_id, "next": nxt,
             "features": [{"index": i, "activation": v, "label": labels.get(i)} for i, v in top]}
            for piece, token_id, nxt, top in zip(result.pieces, result.token_ids, result.next_tokens, tops)]


@router.get("/saes/{sae_id}/search", response_class=HTMLResponse)
def search(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, text: SearchText = "",
           n: TopN = 5):
    """The page (or, for htmx, the token fragment); the form also works without JavaScript."""
    sae = crud.find_sae(session, ref=sae_id)
    rows = token_rows(session, sae.id, request.app.state.models.run(sae, text), n) if text.strip() else []
    context = {"sae": sae, "text": text, "rows": rows, "n": n}
    return render(request, "_search_tokens.html" if is_htmx(request) else "search.html", context)
