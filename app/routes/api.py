"""The JSON API: everything the pages show, for scripts (documented at /docs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from .. import crud
from ..deps import (
    CsrfChecked,
    FeatureIndex,
    LabellerDep,
    LoginRequired,
    Page,
    PageKey,
    PageKeyDep,
    PerPage,
    ReaderDep,
    SaeId,
    SearchQuery,
    SessionDep,
    Storable,
    TagFilter,
    TopN,
    TypedText,
    WholeWords,
)
from ..presenters.model_state import model_status
from ..presenters.search import token_rows
from ..schemas import (
    BookmarkListOut,
    FeatureActivations,
    FeatureList,
    FeatureOut,
    LabelConflictOut,
    LabelIn,
    LabelOut,
    ModelStatusOut,
    NextToken,
    SaeDetail,
    SaeOut,
    SearchResult,
    SearchToken,
    TokenActivation,
)
from ..services.inference import model_spec

router = APIRouter(prefix="/api", tags=["api"])
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such SAE or feature"},
                                           422: {"description": "Bad parameters"}}
Text = Annotated[str, Query(min_length=1, max_length=2000), Storable]


@router.get("/saes", response_model=list[SaeOut])
def saes(session: SessionDep, _user: ReaderDep):
    return crud.list_saes(session)


@router.get("/saes/{sae_id}", response_model=SaeDetail, responses=ERRORS)
def sae(session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    row = crud.find_sae(session, ref=sae_id)
    return SaeDetail(**SaeOut.model_validate(row).model_dump(), training_log=row.training_log,
                     density_histogram=row.density_histogram, labelled_count=crud.labelled_count(session, sae_id=row.id))


@router.get("/saes/{sae_id}/features", response_model=FeatureList, responses=ERRORS)
async def features(session: SessionDep, _user: ReaderDep, sae_id: SaeId, key: PageKeyDep,
                   sort: crud.SortKey = "index", desc: bool = False, state: crud.StateFilter = "all", tag: TagFilter = "",
                   q: SearchQuery = "", whole_words: WholeWords = False, page: Page = 1, per_page: PerPage = 50):
    """One page of features, sorted and filtered like the list page; `q` searches labels, drafts and top tokens.
    `next` holds the parameters of the page after it by key (`after` and `after_key` or `after_text`): added to
    this request's, they fetch it at the cost of the first page, where a `page` number deep in a large SAE skips
    every row before it.

    On the event loop, as the list page is (`routes/features.py`), and for its reason."""
    row = crud.find_sae(session, ref=sae_id)
    rows, total = crud.list_features(session, sae_id=row.id, sort=sort, descending=desc, state=state, tag=tag or None,
                                     query=q or None, whole_words=whole_words, limit=per_page + 1,
                                     offset=(page - 1) * per_page, after=key.cursor(sort))
    more, rows = len(rows) > per_page, rows[:per_page]
    return FeatureList(total=total, page=page, per_page=per_page, features=rows,
                       next=PageKey.following(rows[-1], sort) if more else None)


@router.get("/saes/{sae_id}/features/{feature_index}", response_model=FeatureOut, responses=ERRORS)
async def feature(session: SessionDep, _user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex):
    """A feature with its statistics, examples (top and per quantile interval), logits, neighbours and labels.

    On the event loop, as the feature page is (`routes/features.py`), and for its reason."""
    return FeatureOut.of(crud.feature_page(session, sae_id=sae_id, feature_index=feature_index))


@router.get("/saes/{sae_id}/features/{feature_index}/activations", response_model=FeatureActivations,
            responses=ERRORS)
def activations(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex,
                text: Text):
    """This feature's activation on each token of `text` (BOS first), computed now."""
    crud.find_feature(session, sae_id=sae_id, feature_index=feature_index)  # 404 for an unknown feature
    result = request.app.state.models.run(crud.find_sae(session, ref=sae_id), text)
    return FeatureActivations(feature_index=feature_index, tokens=[
        TokenActivation(token=p, token_id=t, activation=a)
        for p, t, a in zip(result.pieces, result.token_ids, result.feature(feature_index))])


@router.get("/saes/{sae_id}/model", response_model=ModelStatusOut, responses=ERRORS)
def model(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """Whether the SAE's model is loaded in this server process (the first run, or start-up, loads it)."""
    status = model_status(request, model_spec(crud.find_sae(session, ref=sae_id)))
    return ModelStatusOut(model=status.spec, phase=status.phase, error=status.error, loading_s=status.waited_s)


@router.get("/saes/{sae_id}/search", response_model=SearchResult, responses=ERRORS)
def search(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, text: TypedText, n: TopN = 5):
    """Per token of `text`: the `n` features that fire most and the model's likeliest next tokens."""
    row = crud.find_sae(session, ref=sae_id)
    rows = token_rows(session, row.id, request.app.state.models.run(row, text), n) if text.strip() else []
    return SearchResult(tokens=[SearchToken(token=r["piece"], token_id=r["token_id"], features=r["features"],
                                            next_tokens=[NextToken(token=t, probability=p) for t, p in r["next"]])
                                for r in rows])


@router.get("/saes/{sae_id}/labels", response_model=list[LabelOut], responses=ERRORS)
def labels(session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """Every label version of the SAE, oldest first."""
    row = crud.find_sae(session, ref=sae_id)
    return [LabelOut.of(label) for label in crud.all_labels(session, sae_id=row.id)]


@router.post("/saes/{sae_id}/features/{feature_index}/labels", status_code=201, response_model=LabelOut,
             responses=ERRORS | {409: {"model": LabelConflictOut, "description": "The label changed meanwhile"}},
             dependencies=[CsrfChecked])
def add_label(session: SessionDep, user: LabellerDep, sae_id: SaeId, feature_index: FeatureIndex, body: LabelIn):
    """Append a label (needs a labeller: Authorization: Bearer TOKEN); `base_label_id` guards against overwrites."""
    try:
        label = crud.revise_label(session, sae_id=sae_id, feature_index=feature_index, text=body.text,
                                  base_id=body.base_label_id, author_id=user.id)
    except crud.LabelConflict as err:
        current = LabelOut.of(err.current) if err.current else None
        return JSONResponse(LabelConflictOut(detail=str(err), current=current).model_dump(mode="json"), status_code=409)
    except ValueError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    return LabelOut.of(label)


@router.get("/tags", response_model=list[str])
def tags(session: SessionDep, _user: ReaderDep):
    """Every tag in use, by name."""
    return crud.list_tags(session)


@router.get("/bookmarks", response_model=list[BookmarkListOut], responses={401: {"description": "Not signed in"}})
def bookmarks(session: SessionDep, user: ReaderDep):
    """The caller's bookmark lists with their features and notes."""
    if user is None:
        raise LoginRequired()
    return crud.bookmark_lists(session, owner_id=user.id)
