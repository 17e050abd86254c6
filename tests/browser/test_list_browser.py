"""Real-browser checks of the feature list and search: back after htmx pushed a URL, a page past the end, Esc in search."""

from __future__ import annotations

import re

PER_PAGE = 5


def expect_full_list_page(page) -> None:
    """The whole page, not the table fragment: the header, the stylesheet and the filters are there."""
    page.wait_for_selector("nav.top")
    assert page.locator("form.filters").count() == 1
    assert page.locator("link[rel=stylesheet][href='/static/style.css']").count() == 1


def test_back_after_opening_a_feature_restores_the_full_list(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/features?per_page={PER_PAGE}")
    page.click("text=next →")
    page.wait_for_url(re.compile(r"page=2"))
    page.wait_for_selector("text=page 2 of")
    page.locator("#feature-table tbody a").first.click()
    page.wait_for_url(re.compile(r"/features/\d+$"))
    page.go_back()
    page.wait_for_url(re.compile(r"page=2"))
    expect_full_list_page(page)
    assert "page 2 of" in page.inner_text("#feature-table")
    page.reload()
    expect_full_list_page(page)


def test_back_after_opening_a_feature_from_search_by_text_restores_the_full_page(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/search")
    page.fill("#search-text", "the cat sat")
    page.wait_for_url(re.compile(r"text=the"))
    page.locator("#search-tokens a").first.click()
    page.wait_for_url(re.compile(r"/features/\d+$"))
    page.go_back()
    page.wait_for_url(re.compile(r"text=the"))
    page.wait_for_selector("nav.top")
    assert page.input_value("#search-text") == "the cat sat"
    assert page.locator("#search-tokens .search-token").count() > 0
    page.reload()
    page.wait_for_selector("nav.top")
    assert page.locator("#search-text").count() == 1


def test_list_and_search_responses_vary_on_hx_request(page, live_store):
    _url, sae_id, _engine = live_store
    for path in (f"/saes/{sae_id}/features", f"/saes/{sae_id}/search"):
        for hx in ({}, {"HX-Request": "true"}):
            response = page.request.get(path, headers=hx)
            assert "hx-request" in response.headers.get("vary", "").lower(), (path, hx)


def test_a_page_past_the_end_says_so_and_links_to_the_last(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/features?per_page={PER_PAGE}&page=999")
    table = page.inner_text("#feature-table")
    assert "No feature matches" not in table
    assert "page 999 of" not in table
    assert "past the end" in table
    page.click("#feature-table a:has-text('last page')")
    page.wait_for_selector("text=page 5 of 5")
    expect_full_list_page(page)
    fragment = page.request.get(f"/saes/{sae_id}/features?per_page={PER_PAGE}&page=999",
                                headers={"HX-Request": "true"}).text()
    assert "past the end" in fragment and "No feature matches" not in fragment


def test_escape_in_the_search_box_keeps_the_query_and_leaves_the_field(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/features")
    total = page.inner_text("#feature-table p.muted")
    box = page.locator("#q")
    with page.expect_response(re.compile(r"q=zzzz")):
        box.type("zzzz")
    page.wait_for_selector("#feature-table .empty")
    filtered = page.inner_text("#feature-table p.muted")
    assert filtered != total
    box.press("Escape")
    page.wait_for_timeout(600)  # longer than the 300 ms search delay: a cleared box would have reloaded the list
    assert box.input_value() == "zzzz"
    assert page.inner_text("#feature-table p.muted") == filtered
    assert page.evaluate("() => document.activeElement.id") != "q"
