"""Charts drawn on the server as inline SVG, so pages read without JavaScript.

Every piece of text that reaches the SVG goes through markupsafe's escape: titles can hold user content.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 480, 180
PAD_L, PAD_R, PAD_T, PAD_B = 60, 14, 18, 30


def _frame(title: str, x_label: str, y_label: str, body: str, x_ticks: Sequence[tuple[float, str]],
           y_ticks: Sequence[tuple[float, str]]) -> Markup:
    """Axes, ticks and both axis titles around a plotted body; tick positions are in pixels. The last x tick
    ends at the axis's end, so its text stays inside the drawing (centred, "2.2e+02" was cut to "2.2e+")."""
    bottom, right = HEIGHT - PAD_B, WIDTH - PAD_R
    parts = [f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<line class="axis" x1="{PAD_L}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
             f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{bottom}"/>', body]
    anchors = ["middle"] * (len(x_ticks) - 1) + ["end"]
    parts += [f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="{a}">{escape(t)}</text>'
              for (x, t), a in zip(x_ticks, anchors)]
    parts += [f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(t)}</text>' for y, t in y_ticks]
    parts.append(f'<text class="axis-title" x="{(PAD_L + right) / 2}" y="{HEIGHT - 3}" text-anchor="middle">'
                 f"{escape(x_label)}</text>")
    middle = (PAD_T + bottom) / 2
    parts.append(f'<text class="axis-title" x="11" y="{middle}" text-anchor="middle" transform="rotate(-90 11 {middle})">'
                 f"{escape(y_label)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def short_number(v: float) -> str:
    """A tick label in at most about six characters: 0.012, 7.9, 220, 2210, 4.1e5, 2e-4 (no "e+0" padding)."""
    if 100 <= abs(v) < 10_000:
        return f"{v:.0f}"
    if v == 0 or 0.01 <= abs(v) < 100:
        return f"{v:.3g}"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"




def bars(edges: Sequence[float], counts: Sequence[int], *, title: str, x_label: str, y_label: str = "",
         log_x: bool = False, edge_text=short_number) -> Markup:
    """A histogram from bin edges and counts; `log_x` places log-spaced bins evenly, labelled in x."""
    if not counts or len(edges) != len(counts) + 1 or max(counts) == 0:
        return Markup('<p class="empty">no data</p>')
    xs = [math.log10(e) if log_x else e for e in edges]
    x = _scale(xs[0], xs[-1], PAD_L, WIDTH - PAD_R)
    top = max(counts)
    y = _scale(0, top, HEIGHT - PAD_B, PAD_T)
    px = [x(v) for v in xs]
    texts = [escape(edge_text(e)) for e in edges]  # each edge once: neighbouring bars share it
    base = y(0)
    body = []
    for i, c in enumerate(counts):
        if c:
            top_y = y(c)
            body.append(f'<rect class="bar" x="{px[i]:.1f}" y="{top_y:.1f}" width="{max(px[i + 1] - px[i] - 0.5, 0.5):.1f}" '
                        f'height="{base - top_y:.1f}"><title>{texts[i]} &ndash; {texts[i + 1]}: {c}</title></rect>')
    ticks = _ticks(xs[0], xs[-1])
    x_ticks = [(x(t), edge_text(10**t if log_x else t)) for t in ticks]
    y_ticks = [(y(t), f"{t:.0f}") for t in _ticks(0, top, 2)]
    return _frame(title, x_label, y_label, "".join(body), x_ticks, y_ticks)


def line(points: Sequence[tuple[float, float]], *, title: str, x_label: str, y_label: str = "",
         log_y: bool = False) -> Markup:
    """A line through (x, y) points, e.g. a training-loss curve; `log_y` for losses spanning decades."""
    points = [(px, py) for px, py in points if math.isfinite(py) and (py > 0 or not log_y)]
    if len(points) < 2:
        return Markup('<p class="empty">no data</p>')
    ys = [math.log10(py) if log_y else py for _, py in points]
    x = _scale(points[0][0], points[-1][0], PAD_L, WIDTH - PAD_R)
    y = _scale(min(ys), max(ys), HEIGHT - PAD_B, PAD_T)
    path = " ".join(f"{x(px):.1f},{y(py):.1f}" for (px, _), py in zip(points, ys))
    body = f'<polyline class="line" points="{path}"/>'
    x_ticks = [(x(t), short_number(t)) for t in _ticks(points[0][0], points[-1][0])]
    y_ticks = [(y(t), short_number(10**t if log_y else t)) for t in _ticks(min(ys), max(ys), 2)]
    return _frame(title, x_label, y_label, body, x_ticks, y_ticks)
