"""Jinja filters for the pages: compact numbers, quoted and HTML token texts, and the heatmap global."""

from __future__ import annotations

import json
import math

from jinja2 import Environment
from markupsafe import Markup

from .presenters.heatmaps import heatmap, html_text, token_text


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


def ascii_text(text: str) -> Markup:
    """Model text of any length (a whole example window) as html_text writes it, so the page stays ASCII;
    not cached, unlike `tokentext`, which is for single tokens."""
    return Markup(html_text(text))


def install_filters(env: Environment) -> None:
    env.filters.update(num=num, percent=percent, quoted=quoted, tokentext=token_text, asciitext=ascii_text)
    env.globals.update(heatmap=heatmap)
