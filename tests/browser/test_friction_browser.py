"""Real-browser checks of small frictions: Ctrl+Enter saves a label, log in comes back to the page, whitespace
tokens are visible, the list search takes whole words."""

from __future__ import annotations

import re

from app import crud
from app.db import session_factory
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


def test_the_pager_jumps_to_a_typed_page_keeping_the_filters(page, live_store):
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}/features?per_page=5&sort=max_act&desc=true")
    page.fill(".page-jump input[name=page]", "4")
    page.click(".page-jump button")
    page.wait_for_url(re.compile(r"page=4"))
    page.wait_for_selector("text=page 4 of 5")
    assert "sort=max_act" in page.url and "desc=true" in page.url and "per_page=5" in page.url
    page.reload()
    page.wait_for_selector("text=page 4 of 5")


def test_whitespace_tokens_are_drawn_and_copy_as_themselves(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    page.fill("#test-text", "a  b\tc\nd")  # the tiny tokenizer: a token per byte
    window = page.wait_for_selector("#test-result .tokens")
    drawn = page.evaluate("""() => [...document.querySelectorAll('#test-result .ws')].map((el) => [
        el.className, getComputedStyle(el, '::before').content, el.closest('.tok').getBoundingClientRect().width])""")
    assert [(cls, content) for cls, content, _w in drawn] == [
        ("ws sp", '"\u00b7"'), ("ws sp", '"\u00b7"'), ("ws tab", '"\\\\t"'), ("ws nl", '"\\\\n"')]
    assert all(width > 0 for _c, _t, width in drawn)
    copied = page.evaluate("""(el) => { const range = document.createRange(); range.selectNodeContents(el);
        const selection = window.getSelection(); selection.removeAllRanges(); selection.addRange(range);
        return selection.toString(); }""", window)
    assert copied.endswith("a  b\tc\nd")  # the marks are drawn, not written: a copy is the text itself


def test_whole_words_narrows_the_list_search(page, live_store):
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        def first_page(whole_words: bool) -> list[int]:
            rows, _total = crud.list_features(session, sae_id=sae_id, query="s", whole_words=whole_words)
            return [r.feature_index for r in rows]
        substring, words = first_page(False), first_page(True)
    gone = [i for i in substring if i not in words]
    assert gone  # the top tokens hold "s" alone and inside others ("<eos>")
    link = f"#feature-table a[href='/saes/{sae_id}/features/{gone[0]}']"
    page.goto(f"/saes/{sae_id}/features")
    page.fill("#q", "s")
    page.wait_for_selector(link)
    page.check("input[name=whole_words]")
    page.wait_for_selector(link, state="detached")
    assert "whole_words=true" in page.url
