"""The circuits pages in Chromium: a run from the form (target picked from the offered next tokens) ends on the
drawn graph; hovering a feature shows its label, clicking opens its page, and pinned features open the steering
playground as ablations."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import torch

from app import crud
from app.db import session_factory
from app.ingest import store_record
from app.pipeline import read_sae, register_sae
from sae_core.lm import load_model
from sae_core.records import RecordConfig, record_sae
from tests.browser.test_feature_browser import log_in
from tests.core.attribution_setup import SITES, tiny_sae

PROMPT = "the cat sat on the"
SET_NAME = "browser-circuits"
LABEL = "feline subjects"


@pytest.fixture(scope="module")
def circuit_set(live_store, tiny_model_dir, tmp_path_factory):
    """Three recorded tiny SAEs (one per residual site of the tiny Llama) as a set in the live store; the set's
    id and its SAEs' ids in site order. Every feature of the middle SAE gets the same label, so whichever feature
    the graph draws, its label can be looked for."""
    _url, _sae_id, engine = live_store
    root = tmp_path_factory.mktemp("browser-circuit-saes")
    lm = load_model(str(tiny_model_dir))
    contexts = list(torch.randint(3, 512, (8, 16), generator=torch.Generator().manual_seed(7)))
    cfg = RecordConfig(n_top=3, before=4, after=2, n_intervals=2, per_interval=1, batch_size=8)
    with session_factory(engine)() as session:
        ids = []
        for i, site in enumerate(SITES):
            loaded = read_sae(tiny_sae(site, model=tiny_model_dir.name, seed=i).save(root / f"sae{i}"))
            row = register_sae(session, loaded=loaded, name=f"circuit sae {i}", model_spec=str(tiny_model_dir))
            record = record_sae(lm.model, loaded.sae, contexts, site=loaded.sae.cfg.provenance.site,
                                tokenizer=lm.tokenizer, cfg=cfg)
            store_record(session, sae_id=row.id, record=record, dataset="random tokens")
            sae_set = crud.add_to_set(session, sae=row, set_name=SET_NAME)
            ids.append(row.id)
        for index in range(loaded.sae.cfg.d_sae):
            crud.add_label(session, sae_id=ids[1], feature_index=index, text=LABEL)
        return sae_set.id, ids


def run_from_the_page(page, set_id: int) -> str:
    """Log in, type the prompt, pick the model's likeliest next token, run; the target picked."""
    log_in(page)
    page.goto(f"/saes/{set_id}/circuits")
    page.fill("#circuit-prompt", PROMPT)
    page.click("#show-targets")
    first = page.locator(".pick-target").first
    first.wait_for()
    assert page.locator(".pick-target").count() == 10
    first.click()
    target = first.get_attribute("data-token")
    assert page.input_value("#circuit-target") == target
    page.fill("input[name=verify_top]", "4")
    page.fill("input[name=max_nodes]", "12")
    page.click("#circuit-run")
    page.wait_for_url(re.compile(rf"/saes/{set_id}/circuits/\d+"), timeout=60_000)
    page.wait_for_selector("#graph circle.node.feature")
    return target


def features_on_site(page, layer: int) -> list:
    """The drawn feature nodes of the SAE at `layer` (its site's index), largest |effect| first, as
    (locator, node data)."""
    nodes = page.locator("#graph circle.node.feature")
    ids = [nodes.nth(i).get_attribute("data-node") for i in range(nodes.count())]
    graph = page.evaluate("JSON.parse(document.getElementById('graph-data').textContent)")
    drawn = sorted((n for n in graph["nodes"] if n["node_id"] in ids and n["layer"] == layer),
                   key=lambda n: -abs(n["effect"]))
    assert drawn, f"no feature of site {layer} is drawn"
    return [(page.locator(f"#graph circle.node[data-node='{n['node_id']}']"), n) for n in drawn]


def test_a_run_from_the_page_draws_the_graph_and_a_click_opens_the_feature(page, circuit_set):
    set_id, sae_ids = circuit_set
    target = run_from_the_page(page, set_id)
    assert target in page.locator("h1").inner_text()
    assert "edges shown" in page.locator("#graph-count").inner_text()
    assert page.locator("#graph path.edge").count() > 0
    node, data = features_on_site(page, 1)[0]
    node.hover()
    tip = page.locator("#graph-tip")
    tip.wait_for(state="visible")
    assert f"feature #{data['feature']}" in tip.inner_text() and f"label: {LABEL}" in tip.inner_text()
    node.click()
    page.wait_for_url(f"**/saes/{sae_ids[1]}/features/{data['feature']}")
    assert LABEL in page.locator("body").inner_text()


def test_pinned_features_open_the_steering_playground_as_ablations_or_clamps(page, circuit_set):
    set_id, sae_ids = circuit_set
    run_from_the_page(page, set_id)
    drawn = features_on_site(page, 1)[:2]
    assert len(drawn) == 2, "the test wants two drawn features of one site"
    for node, _data in drawn:
        node.click(modifiers=["Shift"])
        assert "pinned" in (node.get_attribute("class") or "")
    features = [str(data["feature"]) for _node, data in drawn]
    pins = page.locator("#pins li")
    assert pins.count() == 2 and all(f"#{f}" in pins.all_inner_texts()[i] for i, f in enumerate(features))
    assert all(data["node_id"] in urlsplit(page.url).fragment for _node, data in drawn)
    link = page.locator("#steer-links a.steer-link")
    assert link.count() == 1 and SITES[1] in link.inner_text()
    query = parse_qs(urlsplit(link.get_attribute("href")).query)
    assert query["pin"] == [f"{f}:ablate" for f in features] and query["prompt"] == [PROMPT]
    page.select_option("#pin-mode", "clamp")
    page.fill("#pin-value", "2.5")
    query = parse_qs(urlsplit(link.get_attribute("href")).query)
    assert query["pin"] == [f"{f}:clamp:2.5" for f in features]
    link.click()
    page.wait_for_url(f"**/saes/{sae_ids[1]}/steer?*")
    assert page.input_value("textarea[name=prompt]") == PROMPT
    rows = page.locator("#interventions .intervention")
    assert [rows.nth(i).locator("input[name=feature]").input_value() for i in range(rows.count())] == features
    assert all(rows.nth(i).locator("select[name=mode]").input_value() == "clamp" for i in range(2))
    assert all(rows.nth(i).locator("input[name=value]").input_value() == "2.5" for i in range(2))


def test_a_permalink_with_pins_reopens_them_ticked_in_the_table(page, circuit_set):
    set_id, _sae_ids = circuit_set
    run_from_the_page(page, set_id)
    box = page.locator("input.pin").first
    node_id = box.get_attribute("data-node")
    box.check()
    assert page.locator("#pins li").count() == 1
    page.reload()
    page.wait_for_selector("#graph circle.node.feature")
    assert page.locator("#pins li").count() == 1
    box = page.locator(f"input.pin[data-node='{node_id}']")
    assert box.is_checked()
    box.uncheck()
    assert page.locator("#pins li").count() == 0 and "pins=" not in urlsplit(page.url).fragment


def test_at_a_phones_width_the_page_fits_and_the_graph_opens_on_the_measured_token(page, circuit_set):
    set_id, _sae_ids = circuit_set
    run_from_the_page(page, set_id)
    graph_url = page.url
    page.set_viewport_size({"width": 390, "height": 800})
    for url in (f"/saes/{set_id}/circuits", graph_url):
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
    wrap = page.locator("#graph-wrap").bounding_box()
    metric = page.locator("#graph circle.node.metric").bounding_box()
    assert wrap["x"] <= metric["x"] and metric["x"] + metric["width"] <= wrap["x"] + wrap["width"], (wrap, metric)
