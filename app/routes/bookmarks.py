"""Bookmark lists of features with notes, one set per user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import CsrfChecked, FeatureIndex, LabellerDep, Note, SaeId, SessionDep, Storable, is_htmx, render

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/bookmarks", response_class=HTMLResponse)
def bookmarks(request: Request, session: SessionDep, user: LabellerDep):
    saes = {sae.id: sae for sae in crud.list_saes(session)}
    lists = crud.bookmark_lists(session, owner_id=user.id)
    briefs = crud.briefs_of_pairs(session, pairs=[(m.sae_id, m.feature_index) for lst in lists for m in lst.bookmarks])
    return render(request, "bookmarks.html", {"lists": lists, "saes": saes, "briefs": briefs})


@router.post("/bookmarks", dependencies=[CsrfChecked])
def create_list(session: SessionDep, user: LabellerDep,
                name: Annotated[str, Form(max_length=200, pattern=r"\S", description="Not blank."), Storable],
                description: Note = ""):
    crud.create_bookmark_list(session, owner_id=user.id, name=name.strip(), description=description)
    return RedirectResponse("/bookmarks", status_code=303)


@router.post("/saes/{sae_id}/features/{feature_index}/bookmark", dependencies=[CsrfChecked])
def bookmark(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
             list_id: Annotated[int, Form(ge=1, lt=2**31)], note: Note = ""):
    """Bookmark and stay on the feature: htmx gets a line saying where it went, a plain post the page again."""
    crud.find_feature(session, sae_id=sae_id, feature_index=feature_index)  # 404 for an unknown feature
    lst = crud.find_bookmark_list(session, list_id=list_id, owner_id=user.id)
    crud.add_bookmark(session, list_id=list_id, sae_id=sae_id, feature_index=feature_index, note=note)
    if is_htmx(request):
        return render(request, "_bookmarked.html", {"list": lst})
    return RedirectResponse(f"/saes/{sae_id}/features/{feature_index}", status_code=303)


@router.post("/bookmarks/{list_id}/remove", dependencies=[CsrfChecked])
def remove(session: SessionDep, user: LabellerDep, list_id: Annotated[int, Path(ge=1, lt=2**31)],
           sae_id: Annotated[int, Form(ge=1, lt=2**31)],
           feature_index: Annotated[int, Form(ge=0, lt=2**31)]):
    crud.find_bookmark_list(session, list_id=list_id, owner_id=user.id)
    crud.remove_bookmark(session, list_id=list_id, sae_id=sae_id, feature_index=feature_index)
    return RedirectResponse("/bookmarks", status_code=303)
