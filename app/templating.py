"""Jinja helpers for the pages: token heatmaps, compact numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from jinja2 import Environment
from markupsafe import Markup

HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})
"""The five characters markupsafe escapes; str.translate does it without a Markup object per token."""


def heatmap(pieces: Sequence[str], acts: Sequence[float], top: float, peak: int = -1) -> Markup:
    """One window of tokens coloured by activation over `top`, the value in each title, `peak` marked.

    Built in Python rather than a Jinja loop: a feature page holds ~70 windows of ~33 tokens, and this
    is several times faster. Tokens that do not fire get no colour, which keeps pages small.
    """
    spans = []
    for i, (piece, act) in enumerate(zip(pieces, acts)):
        cls = "tok max" if i == peak else "tok"
        share = min(act / top, 1.0) if top > 0 and act > 0 else 0.0
        style = f' style="background:rgba(255,120,0,{share:.2f})"' if share >= 0.005 else ""
        spans.append(f'<span class="{cls}"{style} title="{act:.3g}">{piece.translate(HTML_ESCAPES)}</span>')
    return Markup('<div class="tokens">' + "".join(spans) + "</div>")


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
