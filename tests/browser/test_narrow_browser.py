"""Real-browser checks at a phone's width (390 px): nothing wider than the screen, heatmaps wrap between words."""

from __future__ import annotations

import pytest

from tests.browser.test_feature_browser import log_in, strongest_feature

WIDTH = 390

PAGE_WIDTH = "() => document.documentElement.scrollWidth"

# Each pair of neighbouring tokens with no space between them, whose first token's last line box is not the
# line the second starts on: a word the browser broke in two (or a token broken inside itself).
BROKEN_WORDS = """(box) => {
  const toks = [...box.querySelectorAll('.tok')];
  const broken = [];
  toks.forEach((tok, i) => {
    const rects = tok.getClientRects();
    if (rects.length > 1 && !/\\s/.test(tok.textContent)) broken.push(tok.textContent);
    const next = toks[i + 1];
    if (!next || /\\s$/.test(tok.textContent) || /^\\s/.test(next.textContent)) return;
    const last = rects[rects.length - 1], first = next.getClientRects()[0];
    if (last && first && Math.abs(last.top - first.top) > 1) broken.push(tok.textContent + '|' + next.textContent);
  });
  return broken;
}"""


@pytest.fixture()
def narrow(page):
    page.set_viewport_size({"width": WIDTH, "height": 800})
    return page


def pages(sae_id: int, index: int) -> list[str]:
    return ["/", f"/saes/{sae_id}", f"/saes/{sae_id}/features", f"/saes/{sae_id}/features/{index}",
            f"/saes/{sae_id}/search?text=the+cat+sat", f"/saes/{sae_id}/steer?feature={index}", "/bookmarks"]


def test_no_page_is_wider_than_the_screen_and_log_out_stays_on_it(narrow, live_store):
    sae_id, stored = strongest_feature(live_store)
    log_in(narrow)
    wide = {}
    for url in pages(sae_id, stored.feature.feature_index):
        narrow.goto(url)
        box = narrow.locator("nav.top button:text-is('Log out')").bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDTH, (url, box)
        if narrow.evaluate(PAGE_WIDTH) > WIDTH:
            wide[url] = narrow.evaluate(PAGE_WIDTH)
    assert wide == {}


def test_the_feature_list_shows_its_top_tokens_column_whole(narrow, live_store):
    _url, sae_id, _engine = live_store
    narrow.goto(f"/saes/{sae_id}/features")
    cells = narrow.locator("table.features tbody td:last-child")
    assert cells.count() > 0
    for i in range(cells.count()):
        box = cells.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box


def test_heatmap_text_wraps_between_words_not_inside_them(narrow, live_store):
    sae_id, stored = strongest_feature(live_store)
    narrow.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    narrow.fill("#test-text", " ".join(["interpretability", "supercalifragilistic", "dictionaries"] * 6))
    box = narrow.wait_for_selector("#test-result .tokens")
    assert box.evaluate("(el) => el.getClientRects()[0].height") > 60  # it does wrap, over several lines
    assert box.evaluate(BROKEN_WORDS) == []
    assert narrow.evaluate(PAGE_WIDTH) <= WIDTH
