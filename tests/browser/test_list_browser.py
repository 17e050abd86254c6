"""Real-browser checks of the feature list: back after htmx pushed a URL."""

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


def test_list_and_search_responses_vary_on_hx_request(page, live_store):
    _url, sae_id, _engine = live_store
    for path in (f"/saes/{sae_id}/features", f"/saes/{sae_id}/search"):
        for hx in ({}, {"HX-Request": "true"}):
            response = page.request.get(path, headers=hx)
            assert "hx-request" in response.headers.get("vary", "").lower(), (path, hx)

