"""Real-browser checks of steering measures and contrasts: every row shows its measures when the run is done,
controls add their rows, and the contrast page lists features or says which set is short.

With SAESCOPE_SHOTS=DIR the pages are also saved as screenshots at 1400 and 390 px wide (for reviews)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.browser.test_feature_browser import log_in

WIDTHS = (1400, 390)


def shots(page, name: str) -> None:
    """Screenshots of the page at each width, when SAESCOPE_SHOTS names a folder."""
    folder = os.environ.get("SAESCOPE_SHOTS")
    if not folder:
        return
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(Path(folder) / f"{name}-{width}.png"), full_page=True)


def test_every_row_shows_its_measures_and_controls_add_rows(page, live_store):
    _url, sae_id, _engine = live_store
    log_in(page)
    page.goto(f"/saes/{sae_id}/steer?feature=1")
    page.fill("textarea[name=prompt]", "the cat sat")
    page.fill("input[name=max_new_tokens]", "16")
    page.fill(".intervention input[name=value]", "30")
    page.check("input[name=controls]")
    page.click("#steer-run")
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)
    assert page.locator("#steer-rows h3").all_inner_texts() == [
        "baseline", "steered", "control: random direction", "control: sign flipped"]
    assert page.locator("#steer-rows .measures").count() == 4
    assert page.locator("#steer-rows .measures svg.spark").count() >= 1
    assert "baseline mean" in page.locator("#steer-rows [data-row='1'] .measures").inner_text()
    shots(page, "steer-measures")


def test_a_sweep_marks_its_strongest_fluent_strength(page, live_store):
    _url, sae_id, _engine = live_store
    log_in(page)
    page.goto(f"/saes/{sae_id}/steer?feature=1")
    page.fill("textarea[name=prompt]", "the cat sat")
    page.fill("input[name=max_new_tokens]", "16")
    page.fill("input[name=strengths]", "0, 2, 8, 64")
    page.fill("input[name=perplexity_factor]", "1.5")
    page.click("#steer-run")
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)
    assert "perplexity against strength" in page.locator("#steer-perplexity-chart").inner_html()
    shots(page, "steer-sweep")


def test_the_contrast_page_lists_features_and_names_a_short_set(page, live_store):
    _url, sae_id, _engine = live_store
    log_in(page)
    page.goto(f"/saes/{sae_id}/contrast")
    page.fill("textarea[name=a]", "the cat sat on the mat\na cat and a hat\ncats purr at night")
    page.fill("textarea[name=b]", "1 + 2 = 3\nx = y * 42\nfor i in range(10): print(i)")
    page.fill("input[name=top]", "8")
    page.click("form.contrast button[type=submit]")
    page.wait_for_selector(".contrast-table")
    assert page.locator(".contrast-table tr").count() == 9
    assert page.locator("text=steer with this").count() == 8
    shots(page, "contrast")
    page.fill("textarea[name=a]", "only one text")
    page.click("form.contrast button[type=submit]")
    page.wait_for_selector("#contrast-results .error")
    assert "at least 2" in page.locator("#contrast-results").inner_text()
