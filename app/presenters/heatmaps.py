"""Token heatmaps as HTML, built for speed: a token's span is three table lookups (its shade, its value's
title, its text's cell), and each recorded SAE's token texts are kept as one table of cells (TokenTables).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
from markupsafe import Markup
from sqlalchemy.orm import Session

from .. import crud

HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})
"""The five characters markupsafe escapes; str.translate does it without a Markup object per token."""

SHADES = ["", *(f'" style="--act:{level / 100:.2f}' for level in range(1, 101))]
"""A token's shade per hundredth of the window's top activation (none below half a hundredth), written to
close the class attribute that the span opens. The stylesheet turns --act into the background: a page holds
~2,300 tokens, and the short attribute makes it a fifth smaller than a full background colour did."""

OPEN = np.array([f'<span class="tok{shade}" title="' for shade in SHADES], dtype=object)
OPEN_PEAK = np.array([f'<span class="tok max{shade}" title="' for shade in SHADES], dtype=object)
CLOSE = "</span>"


@lru_cache(maxsize=1 << 16)
def value_title(act: float) -> str:
    """An activation as its hover text, closing the title attribute."""
    return f'{act:.3g}">'


@lru_cache(maxsize=1)
def float16_titles() -> np.ndarray:
    """value_title of every float16, indexed by its bits: stored activations are float16, so a page's titles
    are one table lookup instead of a format per token."""
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32).tolist()
    return np.array([f'{v:.3g}">' for v in values], dtype=object)


def html_text(text: str) -> str:
    """Text escaped for HTML, characters beyond ASCII written as character references.

    One such character among a page's ~140 kB made Python build the page at two bytes a character and
    encode it to UTF-8 forty times slower (270 us against 7 us here). Token texts are the ones that carry
    them (a page shows ~2,300 tokens and twenty logit pieces), so they go through here; the templates are
    ASCII for the same reason.
    """
    return text.translate(HTML_ESCAPES).encode("ascii", "xmlcharrefreplace").decode("ascii")


CONTROL_MARKS = str.maketrans({c: f'<i class="ws {name}">{c}</i>' for c, name in (("\n", "nl"), ("\t", "tab"), ("\r", "cr"))})
"""Newlines, tabs and carriage returns in a token wrapped so the stylesheet draws their escape before them."""
BLANK_MARKS = str.maketrans({" ": '<i class="ws sp"> </i>'}) | CONTROL_MARKS
"""The same for a token of whitespace alone, whose spaces get a faint middle dot drawn over them too: a
boxed space is otherwise an empty box. Spaces before a word stay plain (they would dot every word)."""


def token_html(piece: str) -> str:
    """A token's text as HTML (html_text) with its whitespace drawn visibly (CONTROL_MARKS, BLANK_MARKS). The
    marks are drawn by the stylesheet, so the page's text, copied or read by a script, is the token's own."""
    return html_text(piece).translate(BLANK_MARKS if piece.isspace() else CONTROL_MARKS)


@lru_cache(maxsize=1 << 16)
def token_cell(piece: str) -> str:
    """A token's text as HTML (token_html) closing its span: the last of the three parts `heatmaps` joins
    per token. Pieces come from a bounded vocabulary, so they are cached."""
    return token_html(piece) + CLOSE


@lru_cache(maxsize=1 << 16)
def token_text(piece: str) -> Markup:
    """The `tokentext` filter: a token's text for a template, as token_html writes it (cached, as token_cell)."""
    return Markup(token_html(piece))


def shade_levels(acts: np.ndarray, top: float) -> np.ndarray:
    """Each activation in hundredths of `top`, rounded, clipped to 100; 0 where it is not positive."""
    if not top > 0:
        return np.zeros(len(acts), dtype=np.intp)
    wide = acts.astype(np.float64)  # rounds as the Python floats of the values would
    with np.errstate(invalid="ignore", over="ignore"):
        levels = np.floor(np.minimum(wide * (100.0 / top), 100.0) + 0.5)
        return np.where(wide > 0, levels, 0).astype(np.intp)


def token_cells(pieces: Sequence[str]) -> np.ndarray:
    """token_cell of each piece, as the object array `heatmaps` takes."""
    return np.fromiter(map(token_cell, pieces), dtype=object, count=len(pieces))


def heatmaps(cells: np.ndarray, acts: np.ndarray, lengths: Sequence[int], peaks: Sequence[int],
             top: float) -> list[str]:
    """Windows laid end to end in token `cells` (see token_cell) and `acts` (`lengths` tokens each),
    coloured by activation over `top`, the value in each token's title, each window's `peaks` token marked
    (-1: none); plain HTML strings, to be joined and marked safe by the caller.

    A feature page holds ~70 windows of ~33 tokens and formatting each token in Python was most of its
    time; so the page's spans are assembled column by column from tables (shade, title, text) and joined
    once per window.
    """
    n = len(acts)
    levels = shade_levels(acts, top)
    parts = np.empty((n, 3), dtype=object)
    parts[:, 0] = OPEN[levels]
    sizes = np.asarray(lengths, dtype=np.intp)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    marked = [s + p for s, p, length in zip(starts.tolist(), peaks, lengths) if 0 <= p < length]
    parts[marked, 0] = OPEN_PEAK[levels[marked]]
    if acts.dtype == np.float16:
        parts[:, 1] = float16_titles()[acts.view(np.uint16)]
    else:
        parts[:, 1] = np.fromiter(map(value_title, acts.tolist()), dtype=object, count=n)
    parts[:, 2] = cells
    flat = parts.ravel().tolist()
    return ['<div class="tokens">' + "".join(flat[3 * s:3 * e]) + "</div>"
            for s, e in zip(starts.tolist(), ends.tolist())]


def heatmap(pieces: Sequence[str], acts: Sequence[float], top: float, peak: int = -1) -> Markup:
    """One window of tokens (see heatmaps); extra pieces or activations beyond the shorter are dropped."""
    n = min(len(pieces), len(acts))
    return Markup(heatmaps(token_cells(pieces[:n]), np.asarray(acts[:n], dtype=np.float64), [n], [peak], top)[0])


@dataclass(frozen=True)
class TokenTable:
    """The heatmap cell (token_cell) per token id, and which ids the recording holds a text for."""

    cells: np.ndarray
    known: np.ndarray

    @classmethod
    def of(cls, texts: dict[int, str]) -> TokenTable:
        size = max(texts, default=-1) + 1
        cells, known = np.full(size, "", dtype=object), np.zeros(size, dtype=bool)
        for token_id, text in texts.items():
            cells[token_id], known[token_id] = token_cell(text), True
        return cls(cells, known)

    def lookup(self, ids: np.ndarray) -> np.ndarray | None:
        """The cells of `ids`, or None if the table lacks any of them (the caller reads the windows' own
        pieces then)."""
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.known) or not self.known[ids].all()):
            return None
        return self.cells[ids]


class TokenTables:
    """The cell tables of the last few SAE recordings seen; a new recording gets a new table."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._tables: OrderedDict[tuple[int, datetime | None], TokenTable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, sae_id: int, recorded_at: datetime | None) -> TokenTable:
        """The table of the recording of `sae_id` made at `recorded_at`."""
        key = (sae_id, recorded_at)
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
                return table
        table = TokenTable.of(crud.token_texts(session, sae_id=sae_id))
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > self.capacity:
                self._tables.popitem(last=False)
        return table
