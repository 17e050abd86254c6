"""The feature page's view: its example windows as heatmaps, its charts, the label editor and the tag field.

Routes fetch nothing for the page themselves: `feature_context` reads the stored page (crud.feature_page),
renders its windows and gathers what feature.html needs; the label and tag routes re-render parts of it.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from itertools import chain
from typing import Any

import numpy as np
from fastapi import Request
from markupsafe import Markup
from sqlalchemy import Row
from sqlalchemy.orm import Session

from .. import charts, crud
from ..models import User
from ..packing import ACTS, IDS
from ..services.inference import TextActivations
from .drafts import draft_context
from .heatmaps import TokenTable, heatmaps, token_cells
from .model_state import model_status

TAG_SUGGESTIONS = ("interpretable", "polysemantic", "uninterpretable", "high-frequency", "token-level", "abstract")

Windows = tuple[Markup, list[tuple[int, Markup]]]
"""The top examples' windows, and each quantile interval's (highest first), each section one piece of HTML."""


def feature_context(request: Request, session: Session, sae_id: int, index: int, user: User | None) -> dict[str, Any]:
    """What the feature page template needs: the stored page, charts, neighbour labels, bookmark lists."""
    page = crud.feature_page(session, sae_id=sae_id, feature_index=index, with_pieces=False)
    examples = distinct_examples(page.examples)
    windows = example_windows(examples, page.feature.max_act,
                              request.app.state.token_tables.get(session, sae_id, page.sae.recorded_at))
    if windows is None:  # a token the SAE's token texts lack: read the windows' own pieces instead
        page = crud.feature_page(session, sae_id=sae_id, feature_index=index)
        examples = distinct_examples(page.examples)
        windows = example_windows_of_pieces(examples, page.feature.max_act)
    f = page.feature
    writer = user if user is not None and user.can_write else None
    hist = charts.bars(f.hist.get("edges", []), f.hist.get("counts", []), log_x=True, x_label="activation",
                       y_label="tokens",
                       title=f"activations of feature {index}" + (f": {page.label}" if page.label else ""))
    return {"sae": page.sae, "page": page, "f": f, "hist_chart": hist, "label_editor": label_editor(page),
            "top_windows": windows[0], "quantile_windows": windows[1], "repeats": len(page.examples) - len(examples),
            "model": model_status(request, page.sae.model),
            "tag_choices": tag_choices(session) if writer else [],  # only the tag form offers them
            "lists": crud.bookmark_lists(session, owner_id=writer.id) if writer else [],
            **draft_context(session, page)}


def example_windows(examples: Sequence[Row[Any]], top_act: float, token_table: TokenTable) -> Windows | None:
    """Example windows (rows of FeaturePage.examples) as heatmaps shaded against `top_act`, rendered together
    from the stored bytes with token texts from `token_table`; None if the table lacks one of the tokens."""
    if not examples:
        return Markup(""), []
    token_ids, _pieces, acts, peaks, values, intervals, *_ = zip(*examples)  # columns, not rows
    lengths = np.minimum(_counts(acts, ACTS.itemsize), _counts(token_ids, IDS.itemsize))
    cells = token_table.lookup(np.frombuffer(_joined(token_ids, lengths, IDS.itemsize), dtype=IDS))
    return None if cells is None else _windows(cells, acts, lengths, peaks, values, intervals, top_act)


def example_windows_of_pieces(examples: Sequence[Row[Any]], top_act: float) -> Windows:
    """example_windows with the token texts the rows hold themselves (a page read with pieces)."""
    if not examples:
        return Markup(""), []
    token_ids, pieces, acts, peaks, values, intervals, *_ = zip(*examples)
    lengths = np.minimum(_counts(acts, ACTS.itemsize), _counts(token_ids, IDS.itemsize))
    lengths = np.minimum(lengths, _counts(pieces, 1))  # a damaged row shows what it has
    cells = token_cells(list(chain.from_iterable(p[:n] for n, p in zip(lengths.tolist(), pieces))))
    return _windows(cells, acts, lengths, peaks, values, intervals, top_act)


PEAK_CONTEXT = 5
"""Tokens either side of the boxed one that make its context: two windows boxing a token in the same context
show one example twice (recorded text repeats boilerplate: licence headers, imports, chat templates)."""


def distinct_examples(examples: Sequence[Row[Any]]) -> list[Row[Any]]:
    """The examples worth a window on the page: in each section (the top examples, each interval) those whose
    window tokens, or whose boxed token with PEAK_CONTEXT tokens either side, no earlier one of the section
    showed. The stored examples (the API, the exports) keep every one."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    size = IDS.itemsize
    for row in examples:
        n = min(len(row.token_ids) // size, len(row.acts) // ACTS.itemsize)
        window = row.token_ids[:n * size]
        keys: set[tuple[Any, ...]] = {(row.interval, window)}
        if 0 <= row.peak < n:
            start, end = max(0, row.peak - PEAK_CONTEXT), min(n, row.peak + PEAK_CONTEXT + 1)
            keys.add((row.interval, window[start * size:end * size], row.peak - start))
        if seen.isdisjoint(keys):
            kept.append(row)
            seen |= keys
    return kept


def _windows(cells: np.ndarray, acts: Sequence[bytes], lengths: np.ndarray, peaks: Sequence[int],
             values: Sequence[float], intervals: Sequence[int | None], top_act: float) -> Windows:
    """The heatmaps of windows whose token cells lie end to end, `lengths` tokens each, in their sections,
    each after its own activation at the boxed token."""
    windows = heatmaps(cells, np.frombuffer(_joined(acts, lengths, ACTS.itemsize), dtype=ACTS), lengths.tolist(),
                       peaks, top_act)
    top: list[str] = []
    groups: dict[int, list[str]] = {}
    for interval, value, window in zip(intervals, values, windows):
        example = f'<div class="example"><span class="exval">{value:.3g}</span>{window}</div>'
        (top if interval is None else groups.setdefault(interval, [])).append(example)
    return Markup("".join(top)), [(i, Markup("".join(group))) for i, group in sorted(groups.items(), reverse=True)]


def _counts(items: Sequence[Sized], itemsize: int) -> np.ndarray:
    """How many whole items of `itemsize` bytes (or elements) each of `items` holds."""
    return np.fromiter(map(len, items), dtype=np.intp, count=len(items)) // itemsize


def _joined(blobs: Sequence[bytes], lengths: np.ndarray, itemsize: int) -> bytes:
    """The first `lengths` items of each blob, end to end; whole blobs when none is longer (the usual case)."""
    if np.array_equal(_counts(blobs, 1), lengths * itemsize):
        return b"".join(blobs)
    return b"".join(blob[:itemsize * n] for blob, n in zip(blobs, lengths.tolist()))


def typed_text_result(result: TextActivations | None, feature_index: int, max_act: float) -> dict[str, Any]:
    """What _test_result.html needs for typed text: the activations, and the peak to box only if it fires.

    A feature at zero on every token has no peak: argmax would box the first token (`<|im_start|>`) as if
    the feature fired there, so `peak` is -1 and the template says the feature does not fire.
    """
    acts = result.feature(feature_index) if result else []
    fires = any(a > 0 for a in acts)
    peak = max(range(len(acts)), key=acts.__getitem__) if fires else -1
    return {"result": result, "acts": acts, "peak": peak, "fires": fires, "top": max([max_act, *acts])}


def tag_choices(session: Session) -> list[str]:
    """What the tag field offers: the usual tags and every tag already in use."""
    return sorted(set(TAG_SUGGESTIONS) | set(crud.list_tags(session)))


def label_editor(page: crud.FeaturePage, conflict: dict[str, Any] | None = None, saved: bool = False) -> dict[str, Any]:
    """The label editor's state; `conflict` holds the label someone saved meanwhile and the text typed here."""
    return {"sae_id": page.sae.id, "index": page.feature.feature_index, "labels": page.labels,
            "base_id": page.labels[0].id if page.labels else None, "conflict": conflict, "saved": saved}


def tags_context(session: Session, page: crud.FeaturePage) -> dict[str, Any]:
    """What the tags fragment needs after a tag is added or removed."""
    return {"sae": page.sae, "page": page, "f": page.feature, "tag_choices": tag_choices(session)}
