"""Jinja helpers for the pages: token heatmaps, compact numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain

from jinja2 import Environment
from markupsafe import Markup

HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})
"""The five characters markupsafe escapes; str.translate does it without a Markup object per token."""


SHADES = ["", *(f'" style="background:rgba(255,120,0,{level / 100:.2f})' for level in range(1, 101))]
"""A token's background per hundredth of the window's top activation (none below half a hundredth),
written to close the class attribute that the window format opens."""


@lru_cache(maxsize=1 << 16)
def value_title(act: float) -> str:
    """An activation as its hover text; stored activations are float16, so few distinct values recur."""
    return f"{act:.3g}"


@lru_cache(maxsize=256)
def _window_format(n_tokens: int) -> str:
    return '<div class="tokens">' + '<span class="tok%s" title="%s">%s</span>' * n_tokens + "</div>"


@lru_cache(maxsize=1 << 16)
def escaped_piece(piece: str) -> str:
    """A token's text escaped for HTML; pieces come from a bounded vocabulary, so they are cached."""
    return piece.translate(HTML_ESCAPES)


def heatmap(pieces: Sequence[str], acts: Sequence[float], top: float, peak: int = -1) -> Markup:
    """One window of tokens coloured by activation over `top`, the value in each title, `peak` marked.

    A feature page holds ~70 windows of ~33 tokens, and formatting each token was most of its rendering
    time; so shades come from a table, titles and escaped pieces from caches, and one %-format fills the
    window (numpy is no help at this size: its per-call cost exceeds the work).
    """
    if top > 0:
        scale = 100.0 / top
        shades = [SHADES[int(min(act * scale, 100.0) + 0.5)] if act > 0 else "" for act in acts]
    else:
        shades = [""] * len(acts)
    if 0 <= peak < len(shades):
        shades[peak] = " max" + shades[peak]
    cells = zip(shades, map(value_title, acts), map(escaped_piece, pieces))
    return Markup(_window_format(len(shades)) % tuple(chain.from_iterable(cells)))


def num(value: float | int | None, digits: int = 3) -> str:
    """Numbers as a researcher reads them: a few significant digits, scientific when tiny."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and math.isfinite(value) and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def quoted(text: str) -> str:
    """A token's text in double quotes with escapes, so spaces and newlines show. A plain str, not Markup
    (unlike Jinja's tojson), so autoescape still escapes its quotes inside an attribute."""
    return json.dumps(text, ensure_ascii=False)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.3g}%"


def install_filters(env: Environment) -> None:
    env.filters.update(num=num, percent=percent, quoted=quoted)
    env.globals.update(heatmap=heatmap)
