"""Writing labels and tags from the feature page, and label export/import as CSV or JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from .. import crud, label_files
from ..crud.explanations import drafts_of_labels
from ..deps import (
    CsrfChecked,
    FeatureIndex,
    LabellerDep,
    LabelText,
    ReaderDep,
    SaeId,
    SessionDep,
    TagName,
    is_htmx,
    render,
)
from ..models import Explanation, Label
from ..presenters.feature_page import feature_context, label_editor, tags_context

router = APIRouter(tags=["pages"], include_in_schema=False)

MAX_IMPORT_BYTES = 20 * 2**20


def _back(request: Request, sae_id: int, index: int, fragment: str, context: dict) -> Response:
    """htmx gets the updated fragment; a plain form post goes back to the feature page."""
    if is_htmx(request):
        return render(request, fragment, context)
    return RedirectResponse(f"/saes/{sae_id}/features/{index}", status_code=303)


@router.post("/saes/{sae_id}/features/{feature_index}/label", response_class=HTMLResponse,
             dependencies=[CsrfChecked])
def save_label(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
               text: LabelText, base_label_id: Annotated[str, Form(pattern=r"^\d*$", max_length=12)] = ""):
    """Append a label unless someone saved one since this editor loaded (409, both texts shown)."""
    base = int(base_label_id) if base_label_id else None
    try:
        crud.revise_label(session, sae_id=sae_id, feature_index=feature_index, text=text, base_id=base,
                          author_id=user.id)
    except crud.LabelConflict as err:
        context = feature_context(request, session, sae_id, feature_index, user)
        editor = label_editor(context["page"], {"current": err.current, "yours": text})
        if is_htmx(request):
            return render(request, "_label_editor.html", {"editor": editor}, status_code=409)
        return render(request, "feature.html", context | {"label_editor": editor}, status_code=409)
    except ValueError as err:  # a blank label
        raise HTTPException(422, str(err)) from None
    page = crud.feature_page(session, sae_id=sae_id, feature_index=feature_index)
    return _back(request, sae_id, feature_index, "_label_editor.html", {"editor": label_editor(page, saved=True)})


@router.post("/saes/{sae_id}/features/{feature_index}/tags", response_class=HTMLResponse, dependencies=[CsrfChecked])
def add_tag(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
            tag: TagName):
    crud.find_feature(session, sae_id=sae_id, feature_index=feature_index)  # 404 for an unknown feature
    try:
        crud.tag_feature(session, sae_id=sae_id, feature_index=feature_index, tag=tag, author_id=user.id)
    except ValueError as err:  # a blank tag
        raise HTTPException(422, str(err)) from None
    return _tags(request, session, sae_id, feature_index)


@router.post("/saes/{sae_id}/features/{feature_index}/tags/remove", response_class=HTMLResponse,
             dependencies=[CsrfChecked])
def remove_tag(request: Request, session: SessionDep, _user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex,
               tag: TagName):
    crud.untag_feature(session, sae_id=sae_id, feature_index=feature_index, tag=tag)
    return _tags(request, session, sae_id, feature_index)


def _tags(request: Request, session: Session, sae_id: int, index: int) -> Response:
    page = crud.feature_page(session, sae_id=sae_id, feature_index=index)
    return _back(request, sae_id, index, "_tags.html", tags_context(session, page))


CurrentOnly = Annotated[bool, Query(description="Each feature's current label only, not the whole history.")]


@router.get("/saes/{sae_id}/labels.csv")
def export_csv(session: SessionDep, _user: ReaderDep, sae_id: SaeId, current: CurrentOnly = False):
    """Every label version of the SAE (or the current ones), oldest first, as CSV."""
    sae = crud.find_sae(session, ref=sae_id)
    labels = crud.all_labels(session, sae_id=sae.id, current_only=current)
    return Response(label_files.to_csv(labels, _origins(session, labels)), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{_export_name(sae.id, current)}.csv"'})


@router.get("/saes/{sae_id}/labels.json")
def export_json(session: SessionDep, _user: ReaderDep, sae_id: SaeId, current: CurrentOnly = False):
    sae = crud.find_sae(session, ref=sae_id)
    labels = crud.all_labels(session, sae_id=sae.id, current_only=current)
    return Response(label_files.to_json(sae.name, labels, _origins(session, labels)),
                    media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{_export_name(sae.id, current)}.json"'})


def _export_name(sae_id: int, current: bool) -> str:
    return f"labels-{sae_id}-current" if current else f"labels-{sae_id}"


def _origins(session: Session, labels: list[Label]) -> dict[int, Explanation]:
    """The drafts that labels were accepted or edited from, so exports carry their models and scores."""
    return drafts_of_labels(session, label_ids=[label.id for label in labels])


@router.post("/saes/{sae_id}/labels/import", response_class=HTMLResponse, dependencies=[CsrfChecked])
def import_labels(request: Request, session: SessionDep, user: LabellerDep, sae_id: SaeId,
                  file: Annotated[UploadFile, File()]):
    """Add the labels of a CSV or JSON file (as exported) that differ from the current ones."""
    sae = crud.find_sae(session, ref=sae_id)
    content = file.file.read(MAX_IMPORT_BYTES + 1)
    try:
        if len(content) > MAX_IMPORT_BYTES:
            raise label_files.LabelFileError(f"the file is over {MAX_IMPORT_BYTES // 2**20} MiB")
        rows = label_files.parse(content, file.filename or "")
        added = crud.import_labels(session, sae_id=sae.id, labels=[(r.feature_index, r.text) for r in rows],
                                   author_id=user.id)
    except ValueError as err:
        return render(request, "imported.html", {"sae": sae, "error": str(err), "added": 0, "rows": 0},
                      status_code=422)
    return render(request, "imported.html", {"sae": sae, "error": None, "added": added, "rows": len(rows)})
