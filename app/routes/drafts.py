"""Reviewing draft explanations (issue 17): accept, edit or reject a feature's draft; walk the drafts lowest score
first. Labellers only, CSRF-checked; htmx gets the draft section back with the label editor swapped beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .. import crud
from ..crud import explanations as drafts
from ..deps import CsrfChecked, FeatureIndex, LabellerDep, LabelText, ReaderDep, SaeId, SessionDep, is_htmx, render
from ..presenters.drafts import draft_context
from ..presenters.feature_page import label_editor

router = APIRouter(tags=["pages"], include_in_schema=False)

DraftId = Annotated[int, Path(ge=1, lt=2**31)]
BaseLabelId = Annotated[str, Form(pattern=r"^\d*$", max_length=12)]


def _section(request: Request, session: SessionDep, sae_id: int, index: int, message: str | None = None,
             status_code: int = 200) -> Response:
    """htmx: the draft section, and the label editor out of band; a plain form post: back to the page."""
    if not is_htmx(request) and status_code == 200:
        return RedirectResponse(f"/saes/{sae_id}/features/{index}", status_code=303)
    if not is_htmx(request):
        raise HTTPException(status_code, message)
    page = crud.feature_page(session, sae_id=sae_id, feature_index=index, with_pieces=False)
    context = draft_context(session, page, message) | {"editor": label_editor(page), "oob_editor": True}
    return render(request, "_feature_draft.html", context, status_code=status_code)


def _review(request: Request, session: SessionDep, sae_id: int, index: int, act: Callable[[], object]) -> Response:
    try:
        act()
    except crud.Conflict as err:
        return _section(request, session, sae_id, index, str(err), 409)
    except crud.LabelConflict:
        return _section(request, session, sae_id, index, "the label changed since this page loaded; look again", 409)
    except ValueError as err:  # a blank label
        raise HTTPException(422, str(err)) from None
    return _section(request, session, sae_id, index)


def _base(value: str) -> int | None:
    return int(value) if value else None


@router.post("/saes/{sae_id}/features/{feature_index}/drafts/{draft_id}/accept", response_class=HTMLResponse,
             dependencies=[CsrfChecked])
def accept(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
           draft_id: DraftId, base_label_id: BaseLabelId = ""):
    """The draft becomes the label (source auto), with this user recorded as its verifier."""
    draft = drafts.find_explanation(session, sae_id=sae_id, feature_index=feature_index, explanation_id=draft_id)
    return _review(request, session, sae_id, feature_index, lambda: drafts.accept_draft(
        session, draft=draft, reviewer_id=user.id, base_label_id=_base(base_label_id)))


@router.post("/saes/{sae_id}/features/{feature_index}/drafts/{draft_id}/edit", response_class=HTMLResponse,
             dependencies=[CsrfChecked])
def edit(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
         draft_id: DraftId, text: LabelText, base_label_id: BaseLabelId = ""):
    """This user's text becomes a human label whose history names the draft it started from."""
    draft = drafts.find_explanation(session, sae_id=sae_id, feature_index=feature_index, explanation_id=draft_id)
    return _review(request, session, sae_id, feature_index, lambda: drafts.edit_draft(
        session, draft=draft, reviewer_id=user.id, text=text, base_label_id=_base(base_label_id)))


@router.post("/saes/{sae_id}/features/{feature_index}/drafts/{draft_id}/reject", response_class=HTMLResponse,
             dependencies=[CsrfChecked])
def reject(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
           draft_id: DraftId):
    draft = drafts.find_explanation(session, sae_id=sae_id, feature_index=feature_index, explanation_id=draft_id)
    return _review(request, session, sae_id, feature_index,
                   lambda: drafts.reject_draft(session, draft=draft, reviewer_id=user.id))


@router.get("/saes/{sae_id}/drafts/review")
def review(session: SessionDep, _user: ReaderDep, sae_id: SaeId, after: Annotated[int | None, Query(ge=0, lt=2**31)] = None):
    """Go to the feature whose unverified draft scores lowest (after `after` in that order), or to the list."""
    sae = crud.find_sae(session, ref=sae_id)
    index = drafts.next_draft(session, sae_id=sae.id, after=after)
    target = f"/saes/{sae.id}/features/{index}" if index is not None else f"/saes/{sae.id}/features?state=draft"
    return RedirectResponse(target, status_code=303)
