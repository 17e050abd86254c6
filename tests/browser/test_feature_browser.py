"""Real-browser checks: hover read-out, labelling through the page, list and export, live "test it", keys."""

from __future__ import annotations

import pytest

from app import crud
from app.db import session_factory
from tests.browser.conftest import PASSWORD


def strongest_feature(live_store) -> tuple[int, crud.FeaturePage]:
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        rows, _ = crud.list_features(session, sae_id=sae_id, sort="max_act", descending=True, limit=1)
        return sae_id, crud.feature_page(session, sae_id=sae_id, feature_index=rows[0].feature_index)


def log_in(page) -> None:
    page.goto("/login")
    page.fill("input[name=name]", "lea")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("text=lea (labeller)")


def test_hovering_a_token_shows_its_activation(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    marked = page.locator(".tok.max").first
    marked.hover()
    info = page.locator("#tok-info")
    value = float(info.inner_text().split("activation ")[1].split()[0])
    top = stored.top[0]
    assert value == pytest.approx(top.acts[top.peak], rel=1e-2)
    assert value == pytest.approx(stored.feature.max_act, rel=1e-2)


def test_a_label_saved_in_the_page_is_in_the_list_and_the_export(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    index = stored.feature.feature_index
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    log_in(page)
    page.goto(f"/saes/{sae_id}/features/{index}")
    label = 'fires on <script>alert("x")</script> & friends'
    page.fill("#label-editor textarea", label)
    page.click("#label-editor button[type=submit]")
    page.wait_for_selector("#label-editor .ok")
    assert page.locator(".current-label").inner_text() == label
    page.goto(f"/saes/{sae_id}/features?state=labelled")
    assert page.locator("td.label").first.inner_text().startswith(label)
    export = page.request.get(f"/saes/{sae_id}/labels.csv").text()
    assert label.replace('"', '""') in export
    page.goto(f"/saes/{sae_id}/features/{index}")
    assert alerts == []


def test_test_it_box_updates_as_you_type(page, live_store):
    sae_id, stored = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    page.locator("#test-text").press_sequentially("hello", delay=20)
    page.wait_for_selector("#test-result .tok")
    assert page.locator("#test-result .tok").count() == len("hello") + 1


def test_keyboard_moves_between_features(page, live_store):
    sae_id, _ = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/3")
    page.keyboard.press("j")
    page.wait_for_url(f"**/saes/{sae_id}/features/4")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/saes/{sae_id}/features/3")
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.tagName") in ("TEXTAREA", "BODY")


def test_search_shows_next_token_probabilities_on_hover(page, live_store):
    sae_id, _ = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/search")
    page.locator("#search-text").press_sequentially("abc", delay=20)
    page.wait_for_function("() => document.querySelectorAll('#search-tokens .search-token').length === 4")
    page.locator("#search-tokens .tok").nth(1).hover()
    info = page.locator("#tok-info").inner_text()
    assert info.startswith('"a"') and "next: " in info and "%" in info


def silent_feature(live_store, text: str) -> tuple[int, int]:
    """An SAE and a feature that is zero on every token of `text`, found by running the real model."""
    from app.services.inference import ModelCache

    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        acts_TF = ModelCache().run(crud.find_sae(session, ref=sae_id), text).acts_TF
    return sae_id, int((acts_TF.amax(dim=0) <= 0).nonzero()[0])


@pytest.mark.parametrize("width", [1400, 390])
def test_test_it_says_when_the_feature_does_not_fire(page, live_store, width):
    sae_id, index = silent_feature(live_store, "hello")
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"/saes/{sae_id}/features/{index}")
    page.locator("#test-text").press_sequentially("hello", delay=20)
    page.wait_for_selector("#test-result .tok")
    page.wait_for_function("() => document.querySelectorAll('#test-result .tok').length === 6")
    assert "does not fire on this text" in page.locator("#test-result").inner_text()
    assert page.locator("#test-result .tok.max").count() == 0
