"""The feature map in Chromium: hover shows a feature's card, a click opens it, search highlights, a box selection
tags the features in it."""

from __future__ import annotations

import pytest

from app import crud
from app.db import session_factory
from app.mapping import map_into_store
from app.models import Sae
from sae_core.maps import MapConfig
from tests.browser.test_feature_browser import log_in


@pytest.fixture(scope="module")
def mapped(live_store):
    """The live store's SAE mapped; its points as (feature_index, x, y)."""
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        map_into_store(session, sae_row=crud.find_sae(session, ref=sae_id),
                       cfg=MapConfig(n_epochs=50, min_cluster_size=3, min_samples=2))
        crud.add_label(session, sae_id=sae_id, feature_index=crud.map_points(session, sae_id=sae_id)[0].feature_index,
                       text="zebra crossings")
        points = [(p.feature_index, p.x, p.y) for p in crud.map_points(session, sae_id=sae_id)]
    return sae_id, points


def open_map(page, sae_id: int) -> dict:
    """Load the map page, wait for its first paint; the canvas's box."""
    page.goto(f"/saes/{sae_id}/map")
    page.wait_for_selector("#map[data-painted-ms]")
    return page.locator("#map-canvas").bounding_box()


def on_screen(box: dict, points: list, x: float, y: float) -> tuple[float, float]:
    """Where map.js draws world point (x, y) in the fitted home view (its fit())."""
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    k = 0.92 * min(box["width"] / (max(xs) - min(xs)), box["height"] / (max(ys) - min(ys)))
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return box["x"] + (x - cx) * k + box["width"] / 2, box["y"] + box["height"] / 2 - (y - cy) * k


def isolated_point(points: list, box: dict) -> tuple[int, float, float]:
    """The point farthest from its nearest neighbour on screen, so hovering it cannot hit another."""
    screen = [(i, *on_screen(box, points, x, y)) for i, x, y in points]
    return max(screen, key=lambda p: min((p[1] - q[1]) ** 2 + (p[2] - q[2]) ** 2 for q in screen if q[0] != p[0]))


def test_hover_shows_the_feature_and_a_click_opens_it(page, mapped):
    sae_id, points = mapped
    box = open_map(page, sae_id)
    assert page.locator("#map").get_attribute("data-points") == str(len(points))
    index, sx, sy = isolated_point(points, box)
    page.mouse.move(sx, sy)
    tip = page.locator("#map-tip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-feature") == str(index) and f"Feature {index}" in tip.inner_text()
    page.mouse.click(sx, sy)
    page.wait_for_url(f"**/saes/{sae_id}/features/{index}")


def test_search_highlights_the_features_whose_label_matches(page, mapped):
    sae_id, _points = mapped
    open_map(page, sae_id)
    page.fill("#map-search", "ZEBRA")
    assert page.locator("#map-found").inner_text() == "1 match"
    page.fill("#map-search", "no feature says this")
    assert page.locator("#map-found").inner_text() == "0 matches"


def test_a_box_selection_puts_a_tag_on_every_feature_in_it(page, mapped, live_store):
    sae_id, points = mapped
    log_in(page)
    box = open_map(page, sae_id)
    page.click("#map-select-mode")
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()
    assert page.locator("#map-selected-count").inner_text() == str(len(points))
    page.fill("#map-add input[name=tag]", "on-the-map")
    page.click("#map-add button[type=submit]")
    page.wait_for_selector(f"#map-added:has-text('Added {len(points)} features to tag')")
    _url, _sae, engine = live_store
    with session_factory(engine)() as session:
        tagged = [i for i, _x, _y in points if "on-the-map" in crud.feature_tags(session, sae_id=sae_id, feature_index=i)]
        for i in tagged:  # the store is shared by every browser test: leave the features' tags as they were
            crud.untag_feature(session, sae_id=sae_id, feature_index=i, tag="on-the-map")
    assert tagged == [i for i, _x, _y in points]


def test_on_a_phone_the_map_and_cluster_pages_are_no_wider_than_the_screen(page, mapped, live_store):
    sae_id, _points = mapped
    _url, _sae, engine = live_store
    with session_factory(engine)() as session:
        sae = session.get(Sae, sae_id)
        name, sae.name = sae.name, "demo-0db8192bd7/layers.6.resid_post"  # the demo's names: one unbroken word
        session.commit()
    try:
        page.set_viewport_size({"width": 390, "height": 800})
        open_map(page, sae_id)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.goto(f"/saes/{sae_id}/clusters/0")  # its members' top tokens wrap too
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        with session_factory(engine)() as session:  # the store is shared by every browser test
            session.get(Sae, sae_id).name = name
            session.commit()
