"""The feature list, the feature page, its "test it" box and the next-unlabelled flow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import (
    FeatureIndex,
    Page,
    PageKey,
    PageKeyDep,
    PerPage,
    ReaderDep,
    SaeId,
    SearchQuery,
    SessionDep,
    TagFilter,
    TypedText,
    WholeWords,
    is_htmx,
    render,
)
from ..models import Sae
from ..presenters.feature_page import feature_context, typed_text_result
from ..presenters.model_state import waiting_for_model

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/saes/{sae_id}/features", response_class=HTMLResponse)
async def feature_list(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, key: PageKeyDep,
                 sort: crud.SortKey = "index", desc: bool = False, state: crud.StateFilter = "all",
                 tag: TagFilter = "", q: SearchQuery = "", whole_words: WholeWords = False,
                 page: Page = 1, per_page: PerPage = 50):
    """`after` (and `after_key` or, for the label sort, `after_text`: the last row's sort value) start the page
    past the previous page's last row: the "next" link pages by key, so a page deep in a million features costs
    what the first does.

    On the event loop, as the feature page is: at a million features with 16 clients, a text search's p99 fell
    from 229 to 107 ms on SQLite and from 270 to 185 ms on PostgreSQL against the thread pool's."""
    sae = crud.find_sae(session, ref=sae_id)
    rows, total = crud.list_features(session, sae_id=sae.id, sort=sort, descending=desc, state=state,
                                     tag=tag or None, query=q or None, whole_words=whole_words, limit=per_page + 1,
                                     offset=(page - 1) * per_page, after=key.cursor(sort))
    more, rows = len(rows) > per_page, rows[:per_page]
    number = int(q) if q.strip().isdigit() and int(q) < sae.d_sae else None  # the feature a typed number names
    jump = crud.feature_briefs(session, sae_id=sae.id, indices=[number]).get(number) if number is not None else None
    pages = max(1, -(-total // per_page)) if total is not None else None
    context = {"sae": sae, "rows": rows, "total": total, "page": page, "per_page": per_page, "jump": jump,
               "pages": pages, "more": more, "next_after": PageKey.following(rows[-1], sort) if more else None,
               "tags": crud.list_tags(session),
               "params": {"sort": sort, "desc": desc, "state": state, "tag": tag, "q": q, "whole_words": whole_words,
                          "per_page": per_page}}
    return render(request, "_feature_table.html" if is_htmx(request) else "features.html", context)


@router.get("/saes/{sae_id}/features/{feature_index}", response_class=HTMLResponse)
async def feature(request: Request, session: SessionDep, user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex):
    """On the event loop, not the thread pool: a few milliseconds of queries and rendering per page, and a
    worker that takes its pages one at a time serves 16 clients with a far shorter tail than 16 threads
    taking turns at the GIL."""
    return render(request, "feature.html", feature_context(request, session, sae_id, feature_index, user))


@router.get("/saes/{sae_id}/features/{feature_index}/test", response_class=HTMLResponse)
def test_text(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex,
              text: TypedText = ""):
    """This feature's activation on each token of typed text, run through the model now (or, while the model
    loads, a note that asks again)."""
    feature = crud.find_feature(session, sae_id=sae_id, feature_index=feature_index)
    sae = crud.find_sae(session, ref=sae_id)
    if text.strip() and (waiting := waiting_for_model(request, sae, is_htmx(request))):
        return render(request, "_model_state.html", waiting)
    result = request.app.state.models.run(sae, text) if text.strip() else None
    return render(request, "_test_result.html", typed_text_result(result, feature_index, feature.max_act))


@router.get("/saes/{sae_id}/next-unlabelled")
def next_unlabelled(session: SessionDep, _user: ReaderDep, sae_id: SaeId,
                    after: Annotated[int, Query(ge=-1, lt=2**31)] = -1):
    """Go to the next live feature nobody has labelled yet (wrapping round), or to the list when none is left."""
    sae: Sae = crud.find_sae(session, ref=sae_id)
    index = crud.next_unlabelled(session, sae_id=sae.id, after=after)
    target = f"/saes/{sae.id}/features/{index}" if index is not None else f"/saes/{sae.id}/features?state=unlabelled"
    return RedirectResponse(target, status_code=303)
