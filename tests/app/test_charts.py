"""Server-drawn charts: both axes titled, tick labels short and inside the drawing."""

import re

from app import charts


def test_short_number_writes_tiny_and_huge_values_without_padding():
    assert [charts.short_number(v) for v in (2.2e5, 4e-4, -3.5e-7, 12_000)] == ["2.2e5", "4e-4", "-3.5e-7", "1.2e4"]
    assert [charts.short_number(v) for v in (0.0123, 7.9, 99.95, 220, 2210, 0)] == ["0.0123", "7.9", "100", "220", "2210", "0"]


def test_a_histogram_titles_both_axes_and_ends_its_last_tick_inside():
    svg = str(charts.bars([1, 10, 100, 1000], [3, 5, 1], title="t", x_label="activation", y_label="tokens", log_x=True))
    assert re.findall(r'class="axis-title"[^>]*>([^<]*)<', svg) == ["activation", "tokens"]
    ticks = re.findall(r'<text x="[\d.]+" y="\d+" text-anchor="(\w+)">([^<]*)</text>', svg)
    assert ticks[-1] == ("end", "1000") and all(a == "middle" for a, _ in ticks[:-1])
