"""Real-browser checks of tag chips: each remove button stays inside its chip, on one line."""

from __future__ import annotations

import pytest

from app import crud
from app.db import session_factory
from tests.browser.test_feature_browser import log_in


def tag_a_feature(live_store, index: int, tags: list[str]) -> int:
    """Put tags on a feature straight through crud, so the check is of rendering, not of adding."""
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        for tag in tags:
            crud.tag_feature(session, sae_id=sae_id, feature_index=index, tag=tag)
    return sae_id


def chips_and_buttons(page) -> list[tuple[dict, dict | None]]:
    """Each chip's bounding box with that of the remove button inside it (None when it has none)."""
    chips = page.locator("#tags .tag")
    boxes = []
    for i in range(chips.count()):
        chip = chips.nth(i)
        button = chip.locator("button")
        boxes.append((chip.bounding_box(), button.bounding_box() if button.count() else None))
    return boxes


@pytest.mark.parametrize("width", [1400, 390])
def test_every_remove_button_sits_inside_its_chip(page, live_store, width):
    sae_id = tag_a_feature(live_store, 5, ["alpha", "beta", "gamma"])
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page)
    page.goto(f"/saes/{sae_id}/features/5")
    boxes = chips_and_buttons(page)
    assert len(boxes) == 3
    assert page.locator("#tags button[title='remove tag']").count() == 3
    for chip, button in boxes:
        assert button is not None
        assert chip["x"] <= button["x"] and button["x"] + button["width"] <= chip["x"] + chip["width"] + 0.5
        assert chip["y"] <= button["y"] and button["y"] + button["height"] <= chip["y"] + chip["height"] + 0.5
        assert chip["height"] < 40


def test_a_tag_typed_in_another_case_reuses_the_existing_one(page, live_store):
    sae_id = tag_a_feature(live_store, 6, ["Python"])
    log_in(page)
    page.goto(f"/saes/{sae_id}/features/6")
    page.fill("#tags input[name=tag][type=text]", "python")
    page.click("#tags button[type=submit]:text('Tag')")
    page.wait_for_selector("#tags input[name=tag][type=text]:placeholder-shown")
    assert [text.split()[0] for text in page.locator("#tags .tag").all_inner_texts()] == ["Python"]
    page.goto(f"/saes/{sae_id}/features?tag=PYTHON")
    assert page.locator(f"a[href='/saes/{sae_id}/features/6']").count() >= 1
