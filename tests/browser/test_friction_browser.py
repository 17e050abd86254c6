"""Real-browser checks of small frictions: Ctrl+Enter saves a label, log in comes back to the page."""

from __future__ import annotations

import re

from tests.browser.conftest import PASSWORD
from tests.browser.test_feature_browser import log_in, strongest_feature


def test_ctrl_enter_saves_the_label(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    log_in(page)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    box = page.locator("#label-editor textarea[name=text]")
    box.fill("saved with ctrl+enter")
    box.press("Control+Enter")
    page.wait_for_selector("#label-editor .ok:text-is('Saved.')")
    assert page.inner_text("#label-editor .current-label") == "saved with ctrl+enter"


def test_log_in_comes_back_to_the_page_it_was_asked_from(page, live_store):
    _url, sae_id, _engine = live_store
    start = f"/saes/{sae_id}/features?state=alive&sort=max_act"
    page.goto(start)
    page.click("nav.top a:text-is('Log in')")
    page.fill("input[name=name]", "lea")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(start) + "$"))
    page.click("nav.top button:text-is('Log out')")
    page.wait_for_url(re.compile(re.escape(start) + "$"))
    assert page.locator("nav.top a:text-is('Log in')").count() == 1


def test_a_number_in_the_list_search_names_that_feature_and_enter_opens_it(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/features")
    page.fill("#q", "3")
    jump = page.wait_for_selector("#feature-table p.jump .fref")
    assert jump.query_selector("a").inner_text() == "3" and jump.query_selector(".fdesc").inner_text().strip()
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(rf"/saes/{sae_id}/features/3$"))
    page.wait_for_selector("h1:has-text('Feature 3 of')")


def test_the_api_docs_link_back_to_the_app(page):
    page.goto("/docs")
    page.click("nav.back a:has-text('back to the SAEs')")
    page.wait_for_selector("h1:text-is('SAEs in the store')")


def test_dark_mode_follows_the_system_setting(page, live_store):
    _url, sae_id, _engine = live_store
    colours = "() => [getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
    page.goto(f"/saes/{sae_id}/features")
    page.emulate_media(color_scheme="light")
    assert page.evaluate(colours) == ["rgb(255, 255, 255)", "rgb(29, 29, 31)"]
    page.emulate_media(color_scheme="dark")
    assert page.evaluate(colours) == ["rgb(22, 22, 24)", "rgb(230, 230, 230)"]
