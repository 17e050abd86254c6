"""Real-browser checks of a server whose model is not loaded yet: "test it", search by text and steering say
it is loading and finish by themselves when it is ready; a load that fails says why on the page."""

from __future__ import annotations

import re

import pytest

import app.services.inference as inference
from app.main import create_app
from app.settings import Settings
from tests.browser.conftest import serving
from tests.browser.test_feature_browser import log_in, strongest_feature
from tests.conftest import GATE_S


@pytest.fixture()
def cold_page(browser, live_store, gate):
    """A page on a server of its own whose model is not loaded (the shared one's usually is)."""
    url, _sae_id, _engine = live_store
    with serving(create_app(Settings(database_url=url, secret_key="browser"))) as base:
        context = browser.new_context(base_url=base)
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        context.close()


def test_test_it_says_the_model_is_loading_then_shows_the_result_by_itself(cold_page, live_store, gate):
    sae_id, stored = strongest_feature(live_store)
    cold_page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    cold_page.fill("#test-text", "the cat sat")
    note = cold_page.wait_for_selector("#test-result .model-state.pending", state="attached")
    # Shown between its polls too (a class the htmx indicators use once hid it but while it asked again).
    assert note.evaluate("(el) => getComputedStyle(el).display") != "none"
    assert re.search(r"Loading the model .+ s so far", note.inner_text())
    gate.set()
    cold_page.wait_for_selector("#test-result .tokens")
    assert cold_page.locator("#test-result .model-state").count() == 0
    assert cold_page.inner_text("#test-result .tokens").endswith("the cat sat")


def test_search_by_text_says_the_model_is_loading_then_shows_the_tokens(cold_page, live_store, gate):
    _url, sae_id, _engine = live_store
    cold_page.goto(f"/saes/{sae_id}/search")
    cold_page.fill("#search-text", "the cat")
    cold_page.wait_for_selector("#search-tokens .model-state.pending")
    gate.set()
    cold_page.wait_for_selector("#search-tokens .search-token")


def test_steering_says_the_model_is_loading_then_runs(cold_page, live_store, gate):
    _url, sae_id, _engine = live_store
    log_in(cold_page)
    cold_page.goto(f"/saes/{sae_id}/steer?feature=1")
    cold_page.fill("textarea[name=prompt]", "the cat sat")
    cold_page.fill("input[name=max_new_tokens]", "3")
    cold_page.click("#steer-run")
    cold_page.wait_for_selector("#steer-status:has-text('loading the model')")
    gate.set()
    cold_page.wait_for_selector("#steer-status:text-is('done')")
    assert cold_page.locator("#steer-rows .steer-row").count() == 2


def test_a_failed_load_says_why_on_the_page(browser, live_store, monkeypatch):
    url, sae_id, _engine = live_store

    def refuse(spec, **_kw):
        raise inference.ModelLoadError(f"cannot load model {spec!r}: no such file")

    monkeypatch.setattr(inference, "load_model", refuse)
    app = create_app(Settings(database_url=url, secret_key="browser", preload_models=True))
    with serving(app) as base:
        app.state.preload.join(GATE_S)
        context = browser.new_context(base_url=base)
        page = context.new_page()
        page.goto(f"/saes/{sae_id}/features/1")
        alert = page.locator(".model-state.error[role=alert]")
        assert "could not be loaded" in alert.inner_text() and "no such file" in alert.inner_text()
        page.fill("#test-text", "the cat")
        page.wait_for_selector("#test-result .error:has-text('no such file')")
        context.close()
