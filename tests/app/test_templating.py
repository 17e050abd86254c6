import html as html_lib
import re
from pathlib import Path

from app.presenters.heatmaps import heatmap, html_text
from app.templating import num


def spans(html):
    return re.findall(r'<span class="(tok[^"]*)"(?: style="--act:([\d.]+)")? title="([^"]*)">(.*?)</span>', html)


def test_heatmap_shades_relative_to_top_marks_the_peak_and_titles_every_value():
    html = str(heatmap(["a", "b", "c", "d"], [0.0, 0.5, 2.0, 4.0], 2.0, peak=2))
    assert spans(html) == [("tok", "", "0", "a"), ("tok", "0.25", "0.5", "b"), ("tok max", "1.00", "2", "c"),
                           ("tok", "1.00", "4", "d")]  # above the top: full colour, true value in the title


def test_heatmap_escapes_token_text_and_survives_odd_values():
    html = str(heatmap(['<script>alert("x")</script>', "&'"], [float("nan"), float("inf")], 0.0))
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html and "&amp;&#39;" in html
    assert [s[1] for s in spans(html)] == ["", ""]  # no top to compare with: no colour
    assert str(heatmap([], [], 1.0)) == '<div class="tokens"></div>'


def test_numbers_read_as_a_researcher_reads_them():
    assert (num(None), num(12345), num(0.000123), num(3.14159)) == ("–", "12,345", "1.23e-04", "3.14")


def test_text_beyond_ascii_becomes_character_references_so_pages_stay_ascii():
    assert html_text('é<b>"漢字"') == "&#233;&lt;b&gt;&#34;&#28450;&#23383;&#34;"
    window = str(heatmap(["naïve", " 🙂"], [1.0, 2.0], 2.0))
    assert window.isascii() and [html_lib.unescape(s[3]) for s in spans(window)] == ["naïve", " 🙂"]
    templates = Path(__file__).resolve().parents[2] / "templates"
    assert [t.name for t in templates.glob("*.html") if not t.read_text(encoding="utf-8").isascii()] == []
