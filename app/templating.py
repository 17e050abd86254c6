"""Jinja filters for the pages: activation colours and compact numbers."""

from __future__ import annotations

import math

from jinja2 import Environment


def heat(value: float, top: float) -> str:
    """Background for a token: orange with opacity proportional to the activation over the feature's max."""
    share = 0.0 if top <= 0 or value <= 0 else min(value / top, 1.0)
    return f"background-color: rgba(255, 120, 0, {share:.2f})"


def num(value: float | int | None, digits: int = 3) -> str:
    """Numbers as a researcher reads them: a few significant digits, scientific when tiny."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and math.isfinite(value) and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.3g}%"


def install_filters(env: Environment) -> None:
    env.filters.update(heat=heat, num=num, percent=percent)
