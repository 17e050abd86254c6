"""Whether a steering run worked, as the playground and an experiment's page show it under each row.

Each row's measures sit beside the baseline's: a steered feature's activation on the row's text next to its
activation on the baseline's text, the perplexity as a multiple of the baseline's, and the per-token KL as
a sparkline. The playground receives the same HTML in its "done" event, so both pages read alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from .. import charts
from ..steer_schemas import RowOut

SPARK_W, SPARK_H = 120, 18


@dataclass(frozen=True)
class EffectView:
    feature: int
    mean: float
    fired: float
    baseline_mean: float
    baseline_fired: float


@dataclass(frozen=True)
class MeasuresView:
    """One row's measures next to the baseline's."""

    row: RowOut
    effects: list[EffectView]
    perplexity_ratio: float | None
    """The row's perplexity over the baseline's."""
    kl_max: float
    kl_max_at: int
    spark: Markup


def sparkline(values: list[float]) -> Markup:
    """A tiny line of per-token values (SVG), scaled to its own maximum."""
    if len(values) < 2 or max(values) <= 0:
        return Markup("")
    top = max(values)
    step = SPARK_W / (len(values) - 1)
    path = " ".join(f"{k * step:.1f},{SPARK_H - v / top * SPARK_H:.1f}" for k, v in enumerate(values))
    return Markup(f'<svg class="spark" viewBox="0 -1 {SPARK_W} {SPARK_H + 2}" width="{SPARK_W}" height="{SPARK_H}" '
                  f'role="img" aria-label="KL per token"><polyline points="{path}"/></svg>')


def measures_views(rows: list[RowOut]) -> list[MeasuresView]:
    """Every row's view; the baseline is the first row."""
    base = rows[0]
    base_effects = {e.feature: e for e in base.effects}
    views = []
    for row in rows:
        effects = [EffectView(e.feature, e.mean, e.fired, base_effects[e.feature].mean, base_effects[e.feature].fired)
                   for e in row.effects if e.feature in base_effects]
        ratio = row.perplexity / base.perplexity if row.perplexity and base.perplexity else None
        peak = max(range(len(row.kl_tokens)), key=row.kl_tokens.__getitem__, default=0)
        views.append(MeasuresView(row, effects, ratio, row.kl_tokens[peak] if row.kl_tokens else 0.0, peak,
                                  sparkline(row.kl_tokens)))
    return views


def perplexity_chart(rows: list[RowOut], factor: float) -> str:
    """A sweep's perplexity against strength, titled with the fluency limit and the strongest strength within."""
    swept = sorted((r.strength, r.perplexity) for r in rows if r.strength is not None and r.perplexity is not None)
    base = rows[0].perplexity if rows else None
    if not swept or base is None:
        return ""
    strongest = [r.strength for r in rows if r.fluent_strongest]
    within = f"strongest within: {strongest[0]:g}" if strongest else "no strength stays within"
    return str(charts.line(swept, title=f"perplexity against strength (limit {factor:g}x baseline "
                                        f"= {factor * base:.3g}; {within})", x_label="strength · perplexity"))
