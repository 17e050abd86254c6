"""The pages work under the Content-Security-Policy: no violation reported while they are used in Chromium.

Violations are caught twice: Chromium's console line ("Refused to ...") and the securitypolicyviolation event,
which an init script (not itself subject to the page's policy) records.
"""

from __future__ import annotations

import pytest

from tests.browser.test_feature_browser import log_in, strongest_feature
from tests.browser.test_steer_browser import start_run

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture()
def watched(page):
    """The page, with every console error, page error and CSP violation it reports collected."""
    problems: list[str] = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
    yield page, problems
    problems.extend(page.evaluate("window.cspViolations || []"))
    assert problems == []


def test_feature_page_hover_and_test_it_box(watched, live_store):
    page, problems = watched
    sae_id, stored = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features/{stored.feature.feature_index}")
    assert page.evaluate("getComputedStyle(document.querySelector('.tok.max')).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.locator(".tok.max").first.hover()
    assert "activation" in page.locator("#tok-info").inner_text()
    page.locator("#test-text").press_sequentially("hi", delay=20)
    page.wait_for_selector("#test-result .tok")
    assert page.evaluate("window.cspViolations") == [] and problems == []


def test_feature_list_filters_with_htmx(watched, live_store):
    page, problems = watched
    sae_id, _ = strongest_feature(live_store)
    page.goto(f"/saes/{sae_id}/features")
    rows = page.locator("#feature-table tbody tr").count()
    page.select_option("select[name=state]", "dead")
    page.wait_for_url("**state=dead**")
    page.wait_for_function(f"() => document.querySelectorAll('#feature-table tbody tr').length !== {rows}")
    assert page.evaluate("window.cspViolations") == [] and problems == []


def test_steering_runs(watched, live_store):
    page, problems = watched
    _url, sae_id, _engine = live_store
    log_in(page)
    start_run(page, sae_id, tokens=4)
    page.wait_for_selector("#steer-status:text-is('done')", timeout=30_000)
    assert page.locator("#steer-rows .steer-row.finished").count() == 2
    assert page.evaluate("window.cspViolations") == [] and problems == []


def test_api_docs_render(watched):
    page, problems = watched
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock-tag", timeout=15_000)
    assert "saescope" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-summary").first.click()
    page.wait_for_selector(".opblock-body")
    assert page.evaluate("window.cspViolations") == [] and problems == []
