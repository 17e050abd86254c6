"""A transcoder set's replacement graph in Chromium: drawn from the page's form, pruned again by the server as a
slider is let go (the model does not rerun), features pinned and rerun with the outcome shown, the steering
playground one link away, and the pages fitting a phone's width."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from app import crud
from app.db import session_factory
from app.pipeline import read_sae, register_sae
from tests.browser.test_feature_browser import log_in
from tests.core.test_replacement import transcoder

PROMPT = "the cat sat on the"
SET_NAME = "browser-transcoders"


@pytest.fixture(scope="module")
def tc_set(live_store, tiny_model_dir, tmp_path_factory) -> int:
    """A transcoder per layer of the tiny Llama as a set in the live store; the set's id."""
    _url, _sae_id, engine = live_store
    root = tmp_path_factory.mktemp("browser-transcoders")
    with session_factory(engine)() as session:
        for layer in range(3):
            loaded = read_sae(transcoder(layer, "transcoder", skip=True, model=tiny_model_dir.name).save(root / f"tc{layer}"))
            row = register_sae(session, loaded=loaded, name=f"browser transcoder {layer}", model_spec=str(tiny_model_dir))
            sae_set = crud.add_to_set(session, sae=row, set_name=SET_NAME)
        return sae_set.id


def draw_from_the_page(page, set_id: int) -> None:
    log_in(page)
    page.goto(f"/saes/{set_id}/circuits")
    page.fill("#circuit-prompt", PROMPT)
    page.fill("input[name=max_feature_nodes]", "16")
    page.click("#circuit-run")
    page.wait_for_url(re.compile(rf"/saes/{set_id}/circuits/\d+"), timeout=60_000)
    page.wait_for_selector("#graph circle.node.feature")


def shown_count(page) -> str:
    return page.locator("#graph-count").inner_text()


def test_a_slider_prunes_the_stored_graph_again_on_the_server(page, tc_set):
    draw_from_the_page(page, tc_set)
    assert page.locator("#graph circle.node.metric").count() >= 1 and page.locator("#graph path.edge").count() > 0
    graph_id = urlsplit(page.url).path.split("/")[-1]
    before = shown_count(page)
    with page.expect_response(lambda r: f"/api/graphs/{graph_id}/view" in r.url) as answered:
        page.eval_on_selector("#node-threshold", "el => { el.value = '0.3'; el.dispatchEvent(new Event('change')); }")
    view = answered.value.json()
    features = sum(n["kind"] in ("feature", "error") for n in view["nodes"])
    page.wait_for_function("n => document.getElementById('graph-count').textContent.startsWith(n + ' nodes')",
                           arg=features)
    assert shown_count(page) != before or features == int(before.split()[0])
    assert page.locator("#graph circle.node.feature, #graph rect.node.error").count() == features
    assert page.locator("#replacement-score").inner_text() == f"{view['replacement_score']:.3f}"
    assert "n=0.30" in urlsplit(page.url).fragment
    page.reload()  # the fragment reopens the view at its thresholds
    page.wait_for_function("n => document.getElementById('graph-count').textContent.startsWith(n + ' nodes')",
                           arg=features)


def test_pinned_features_rerun_and_open_the_playground(page, tc_set):
    draw_from_the_page(page, tc_set)
    assert page.locator("#pin-run").is_disabled()
    box = page.locator("input.pin").first
    node_id = box.get_attribute("data-node")
    layer, feature, _pos = (int(part) for part in node_id.split("_"))
    box.check()
    assert page.locator("#pins li").count() == 1 and f"#{feature}" in page.locator("#pins li").inner_text()
    page.fill("#pin-value", "4")
    link = page.locator("#steer-links a.steer-link")
    assert link.count() == 1 and f"layers.{layer}.mlp_in" in link.inner_text()
    assert parse_qs(urlsplit(link.get_attribute("href")).query)["pin"] == [f"{feature}:clamp:4"]
    page.select_option("select[name=attention]", "live")
    page.click("#pin-run")
    outcome = page.locator("#pinned-outcome")
    outcome.wait_for()
    assert "set to 4.0" in outcome.inner_text() and "recomputed" in outcome.inner_text()
    assert page.locator("#pinned-after").inner_text().strip()
    link.click()
    page.wait_for_url("**/steer?*")
    assert page.input_value("textarea[name=prompt]") == PROMPT


def test_an_output_picked_from_the_offered_tokens_is_the_one_explained(page, tc_set):
    log_in(page)
    page.goto(f"/saes/{tc_set}/circuits")
    page.fill("#circuit-prompt", PROMPT)
    page.click("#show-targets")
    picked = page.locator(".pick-target").nth(3)
    picked.wait_for()
    picked.click()
    token = picked.get_attribute("data-token")
    page.fill("input[name=max_feature_nodes]", "8")
    page.click("#circuit-run")
    page.wait_for_url(re.compile(rf"/saes/{tc_set}/circuits/\d+"), timeout=60_000)
    page.wait_for_selector("#graph circle.node.metric")
    graph = page.evaluate("JSON.parse(document.getElementById('graph-data').textContent)")
    outputs = [n["output"] for n in graph["nodes"] if n["kind"] == "metric"]
    assert outputs == [token] and graph["target"] == token


def test_at_a_phones_width_the_pages_fit(page, tc_set):
    draw_from_the_page(page, tc_set)
    graph_url = page.url
    page.set_viewport_size({"width": 390, "height": 800})
    for url in (f"/saes/{tc_set}/circuits", graph_url):
        page.goto(url)
        page.wait_for_selector("#circuit-form, #graph circle.node")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
