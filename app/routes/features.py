"""The feature list, the feature page, its "test it" box and the next-unlabelled flow."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from itertools import chain
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from .. import charts, crud
from ..deps import FeatureIndex, ReaderDep, SaeId, SessionDep, is_htmx, render
from ..models import Sae, User
from ..packing import ACTS, IDS
from ..security import WRITERS
from ..templating import heatmaps, token_cells
from ..vocab import TokenTable

router = APIRouter(tags=["pages"], include_in_schema=False)

TAG_SUGGESTIONS = ("interpretable", "polysemantic", "uninterpretable", "high-frequency", "token-level", "abstract")
Page = Annotated[int, Query(ge=1, le=10**6)]
PerPage = Annotated[int, Query(ge=1, le=500)]
Text = Annotated[str, Query(max_length=2000)]
"""Typed text for the model; a bound keeps each request short on a CPU."""


@router.get("/saes/{sae_id}/features", response_class=HTMLResponse)
def feature_list(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId,
                 sort: crud.SortKey = "index", desc: bool = False, state: crud.StateFilter = "all",
                 tag: Annotated[str, Query(max_length=64)] = "", q: Annotated[str, Query(max_length=200)] = "",
                 page: Page = 1, per_page: PerPage = 50):
    sae = crud.find_sae(session, ref=sae_id)
    rows, total = crud.list_features(session, sae_id=sae.id, sort=sort, descending=desc, state=state,
                                     tag=tag or None, query=q or None, limit=per_page, offset=(page - 1) * per_page)
    context = {"sae": sae, "rows": rows, "total": total, "page": page, "per_page": per_page,
               "pages": max(1, -(-total // per_page)), "tags": crud.list_tags(session),
               "params": {"sort": sort, "desc": desc, "state": state, "tag": tag, "q": q, "per_page": per_page}}
    return render(request, "_feature_table.html" if is_htmx(request) else "features.html", context)


@router.get("/saes/{sae_id}/features/{feature_index}", response_class=HTMLResponse)
async def feature(request: Request, session: SessionDep, user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex):
    """On the event loop, not the thread pool: a few milliseconds of queries and rendering per page, and a
    worker that takes its pages one at a time serves 16 clients with a far shorter tail than 16 threads
    taking turns at the GIL."""
    return render(request, "feature.html", feature_context(request, session, sae_id, feature_index, user))


def feature_context(request: Request, session: Session, sae_id: int, index: int, user: User | None) -> dict[str, Any]:
    """What the feature page template needs: the stored page, charts, neighbour labels, bookmark lists."""
    page = crud.feature_page(session, sae_id=sae_id, feature_index=index, with_pieces=False)
    windows = example_windows(page, request.app.state.token_tables.get(session, sae_id, page.sae.recorded_at))
    if windows is None:  # a token the SAE's token texts lack: read the windows' own pieces instead
        page = crud.feature_page(session, sae_id=sae_id, feature_index=index)
        windows = example_windows(page, None)
    f = page.feature
    writer = user is not None and user.role in WRITERS
    hist = charts.bars(f.hist.get("edges", []), f.hist.get("counts", []), log_x=True, x_label="activation",
                       title=f"activations of feature {index}" + (f": {page.label}" if page.label else ""))
    return {"sae": page.sae, "page": page, "f": f, "hist_chart": hist, "label_editor": label_editor(page),
            "top_windows": windows[0], "quantile_windows": windows[1],
            "tag_choices": tag_choices(session) if writer else [],  # only the tag form offers them
            "lists": crud.bookmark_lists(session, owner_id=user.id) if writer else [],
            "intervals": (page.sae.record_config or {}).get("n_intervals", 0)}


Windows = tuple[Markup, list[tuple[int, Markup]]]


def example_windows(page: crud.FeaturePage, token_table: TokenTable | None) -> Windows | None:
    """The page's example windows as heatmaps, rendered together from the stored bytes: the top examples,
    and the quantile samples of each interval, highest first, each section one piece of HTML. Token texts
    come from `token_table` (app/vocab.py), or the rows' own pieces when it is None; None if the table lacks
    one of the tokens."""
    if not page.examples:
        return Markup(""), []
    token_ids, pieces, acts, peaks, _values, intervals, *_ = zip(*page.examples)  # columns, not rows
    lengths = np.minimum(_counts(acts, ACTS.itemsize), _counts(token_ids, IDS.itemsize))
    if token_table is None:
        lengths = np.minimum(lengths, _counts(pieces, 1))  # a damaged row shows what it has
        cells = token_cells(list(chain.from_iterable(p[:n] for n, p in zip(lengths.tolist(), pieces))))
    else:
        cells = token_table.lookup(np.frombuffer(_joined(token_ids, lengths, IDS.itemsize), dtype=IDS))
        if cells is None:
            return None
    values = np.frombuffer(_joined(acts, lengths, ACTS.itemsize), dtype=ACTS)
    windows = heatmaps(cells, values, lengths.tolist(), peaks, page.feature.max_act)
    top: list[str] = []
    groups: dict[int, list[str]] = {}
    for interval, window in zip(intervals, windows):
        (top if interval is None else groups.setdefault(interval, [])).append(window)
    return Markup("".join(top)), [(i, Markup("".join(group))) for i, group in sorted(groups.items(), reverse=True)]


def _counts(items: Sequence[Sized], itemsize: int) -> np.ndarray:
    """How many whole items of `itemsize` bytes (or elements) each of `items` holds."""
    return np.fromiter(map(len, items), dtype=np.intp, count=len(items)) // itemsize


def _joined(blobs: Sequence[bytes], lengths: np.ndarray, itemsize: int) -> bytes:
    """The first `lengths` items of each blob, end to end; whole blobs when none is longer (the usual case)."""
    if np.array_equal(_counts(blobs, 1), lengths * itemsize):
        return b"".join(blobs)
    return b"".join(blob[:itemsize * n] for blob, n in zip(blobs, lengths.tolist()))


def tag_choices(session: Session) -> list[str]:
    """What the tag field offers: the usual tags and every tag already in use."""
    return sorted(set(TAG_SUGGESTIONS) | set(crud.list_tags(session)))


def label_editor(page: crud.FeaturePage, conflict: dict[str, Any] | None = None, saved: bool = False) -> dict[str, Any]:
    """The label editor's state; `conflict` holds the label someone saved meanwhile and the text typed here."""
    return {"sae_id": page.sae.id, "index": page.feature.feature_index, "labels": page.labels,
            "base_id": page.labels[0].id if page.labels else None, "conflict": conflict, "saved": saved}


@router.get("/saes/{sae_id}/features/{feature_index}/test", response_class=HTMLResponse)
def test_text(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex,
              text: Text = ""):
    """This feature's activation on each token of typed text, run through the model now."""
    feature = crud.find_feature(session, sae_id=sae_id, feature_index=feature_index)
    result = request.app.state.models.run(crud.find_sae(session, ref=sae_id), text) if text.strip() else None
    acts = result.feature(feature_index) if result else []
    peak = max(range(len(acts)), key=acts.__getitem__) if acts else -1
    return render(request, "_test_result.html", {"result": result, "acts": acts, "peak": peak,
                                                 "top": max([feature.max_act, *acts])})


@router.get("/saes/{sae_id}/next-unlabelled")
def next_unlabelled(session: SessionDep, _user: ReaderDep, sae_id: SaeId,
                    after: Annotated[int, Query(ge=-1, lt=2**31)] = -1):
    """Go to the next live feature nobody has labelled yet (wrapping round), or to the list when none is left."""
    sae: Sae = crud.find_sae(session, ref=sae_id)
    index = crud.next_unlabelled(session, sae_id=sae.id, after=after)
    target = f"/saes/{sae.id}/features/{index}" if index is not None else f"/saes/{sae.id}/features?state=unlabelled"
    return RedirectResponse(target, status_code=303)
