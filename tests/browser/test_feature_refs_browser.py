"""Real-browser checks: a feature number always says what it is (label or top tokens, its top example on hover)."""

from __future__ import annotations

import re

from app import crud
from app.db import session_factory
from tests.browser.test_feature_browser import log_in, strongest_feature


def expect_described_with_preview(page, refs) -> None:
    """Each of `refs` shows a description; hovering the first one's number shows its strongest example."""
    assert refs.count() > 0
    for i in range(refs.count()):
        assert refs.nth(i).locator(".fdesc").inner_text().strip(), refs.nth(i).inner_html()
    preview = refs.first.locator(".preview")
    assert not preview.is_visible()
    refs.first.locator("a").hover()
    assert preview.is_visible() and preview.locator("mark").count() == 1


def test_search_results_say_what_each_feature_is(page, live_store):
    _url, sae_id, engine = live_store
    page.goto(f"/saes/{sae_id}/search?text=the+cat+sat")
    index = int(page.locator(".search-token li .fref a").first.inner_text())
    with session_factory(engine)() as session:
        crud.add_label(session, sae_id=sae_id, feature_index=index, text="a label from the refs test")
    page.reload()
    expect_described_with_preview(page, page.locator(".search-token li .fref"))
    assert "a label from the refs test" in page.locator(".search-token li .fref").first.inner_text()
    expect_described_with_preview(page, page.locator("table.ranked .fref"))


def test_nearest_features_say_what_each_is(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    refs = page.locator(".neighbours .fref")
    assert refs.count() == len(stored.feature.neighbours)
    expect_described_with_preview(page, refs)
    box, screen = refs.first.locator(".preview").bounding_box(), page.viewport_size
    assert box["x"] >= 0 and box["x"] + box["width"] <= screen["width"]


def test_the_steering_picker_describes_each_feature_and_a_pick_starts_at_its_scale(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    index = stored.feature.feature_index
    log_in(page)
    page.goto(f"/saes/{sae_id}/steer")
    page.fill("#picker-q", str(index))
    pick = page.locator(f"#picker-results .pick[data-feature='{index}']")
    assert pick.locator(".fdesc").inner_text().strip()
    pick.click()
    row = page.locator("#interventions .intervention")
    assert float(row.locator("[name=value]").input_value()) == float(f"{stored.feature.max_act:.2g}")
    assert re.fullmatch(r"max activation [\d.e+-]+", row.locator(".feature-max").inner_text())


def test_bookmarks_say_what_each_feature_is(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    log_in(page)
    page.goto("/bookmarks")
    page.fill("input[name=name]", "refs test list")
    page.click("button:text-is('Create')")
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    page.click("button:text-is('Bookmark')")
    page.wait_for_selector("#bookmarked:has-text('Bookmarked in refs test list')")
    page.goto("/bookmarks")
    expect_described_with_preview(page, page.locator(".bookmark-list .fref"))
