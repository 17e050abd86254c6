"""Real-browser checks of the steering playground: both rows stream in token by token; Stop cancels the run."""

from __future__ import annotations

import time

import pytest

from app.db import session_factory
from app.models import Sae
from tests.browser.test_feature_browser import log_in

# Counts each row's text length whenever the rows change, to see the outputs grow rather than appear whole.
WATCH_ROWS = """() => {
  window.lengths = [];
  new MutationObserver(() => window.lengths.push(
    [...document.querySelectorAll('#steer-rows .out')].map((el) => el.textContent.length)))
    .observe(document.getElementById('steer-rows'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture()
def slow_model(live_app, live_store):
    """The live server's model with a 20 ms pause per forward, so a run lasts long enough to watch it."""
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        model = live_app.state.models.load(session.get(Sae, sae_id)).lm.model
    handle = model.register_forward_hook(lambda *_: time.sleep(0.02))
    yield
    handle.remove()


def start_run(page, sae_id: int, tokens: int) -> None:
    page.goto(f"/saes/{sae_id}/steer?feature=1")
    page.fill("textarea[name=prompt]", "the cat sat")
    page.fill("input[name=max_new_tokens]", str(tokens))
    page.fill("input[name=temperature]", "0")
    page.fill(".intervention input[name=value]", "5")
    page.evaluate(WATCH_ROWS)
    page.click("#steer-run")


def test_baseline_and_steered_outputs_stream_in_side_by_side(page, live_store, slow_model):
    _url, sae_id, _engine = live_store
    log_in(page)
    start_run(page, sae_id, tokens=40)
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)
    baseline, steered = page.locator("#steer-rows .out").all_inner_texts()
    assert page.locator("#steer-rows h3").all_inner_texts() == ["baseline", "steered"]
    assert baseline and steered and baseline != steered
    assert page.locator("#steer-rows .steer-row.finished").count() == 2
    lengths = page.evaluate("window.lengths")
    final = lengths[-1]
    partial = [seen for seen in lengths if len(seen) == 2 and 0 < seen[0] < final[0] and 0 < seen[1] < final[1]]
    assert len(partial) >= 3, f"the rows did not grow step by step: {lengths}"


def test_stop_cancels_the_generation_on_the_server(page, live_app, live_store, slow_model):
    _url, sae_id, _engine = live_store
    log_in(page)
    start_run(page, sae_id, tokens=256)
    page.wait_for_function("() => window.lengths.some((seen) => seen.length === 2 && seen[0] > 0)")
    assert live_app.state.steering.busy
    page.click("#steer-stop")
    page.wait_for_selector("#steer-status:text-is('stopped')")
    deadline = time.monotonic() + 3  # the whole run would take over 10 s
    while live_app.state.steering.busy:
        assert time.monotonic() < deadline, "the generation went on after the browser stopped reading"
        time.sleep(0.02)


def open_playground(page, sae_id: int, feature: int | None = 1) -> None:
    """The signed-in playground with a greedy 4-token run set up (and one feature when given)."""
    log_in(page)
    page.goto(f"/saes/{sae_id}/steer" + ("" if feature is None else f"?feature={feature}"))
    page.fill("textarea[name=prompt]", "the cat sat")
    page.fill("input[name=max_new_tokens]", "4")
    page.fill("input[name=temperature]", "0")


def sent_bodies(page) -> list[dict]:
    """Every /api/steer body the page posts from now on, to see what the form sent (or that it sent nothing)."""
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/api/steer") else None)
    return bodies


def test_a_pick_closes_the_picker_and_a_second_pick_of_a_feature_goes_to_its_row(page, live_store):
    _url, sae_id, _engine = live_store
    open_playground(page, sae_id, feature=None)
    for _ in range(2):
        page.fill("#picker-q", "3")
        page.click("#picker-results .pick[data-feature='3']")
        assert page.input_value("#picker-q") == "" and page.locator("#picker-results > *").count() == 0
    assert page.locator("#interventions .intervention").count() == 1
    assert page.evaluate("() => document.activeElement.name") == "value"
    page.click("#steer-run")
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)


def test_an_empty_value_box_is_a_message_not_a_silent_zero(page, live_store):
    _url, sae_id, _engine = live_store
    open_playground(page, sae_id)
    bodies = sent_bodies(page)
    page.fill(".intervention input[name=value]", "")
    page.click("#steer-run")
    page.wait_for_selector("#steer-status.error")
    assert page.inner_text("#steer-status") == "feature 1: enter a value for add (only ablate needs none)"
    assert page.evaluate("() => document.activeElement.name") == "value" and bodies == []
    page.select_option(".intervention select[name=mode]", "ablate")
    page.click("#steer-run")
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)
    assert bodies[0]["interventions"] == [{"feature": 1, "mode": "ablate"}]


def test_a_422_is_one_readable_line_naming_the_field(page, live_store):
    _url, sae_id, _engine = live_store
    open_playground(page, sae_id)
    page.fill(".intervention input[name=value]", "20000")
    page.fill("input[name=strengths]", "1, 99999")
    page.fill("input[name=temperature]", "")
    page.click("#steer-run")
    page.wait_for_selector("#steer-status.error")
    assert page.inner_text("#steer-status") == (
        "422: feature 1's value: Input should be less than or equal to 10000; "
        "strength 99999: Input should be less than or equal to 10000; "
        "temperature: Input should be a valid number")


def test_a_saved_run_appears_in_the_saved_list_without_a_reload(page, live_store):
    _url, sae_id, _engine = live_store
    open_playground(page, sae_id)
    page.check("input[name=save]")
    page.fill("input[name=name]", "browser saved run")
    page.click("#steer-run")
    href = page.wait_for_selector("#steer-status a:text-is('saved: permalink')", timeout=30_000).get_attribute("href")
    page.wait_for_selector(f"#steer-experiments a[href='{href}']:text-is('browser saved run')")


def test_a_saved_sweeps_page_shows_the_strengths_swept(page, live_store):
    _url, sae_id, _engine = live_store
    open_playground(page, sae_id)
    page.fill("input[name=strengths]", "0, 2.5, 8")
    page.check("input[name=save]")
    page.fill("input[name=name]", "browser sweep")
    page.click("#steer-run")
    page.click("#steer-status a:text-is('saved: permalink')", timeout=30_000)
    page.wait_for_selector("h1:has-text('browser sweep')")
    assert page.inner_text("table.grid th.num") == "strengths swept"
    assert page.inner_text("table.grid td.num") == "0, 2.5, 8"
