"""Real-browser check of an explain job from the SAE page: an admin starts it, the section polls itself to done
without a page load, and the section fits a phone's width."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from app import crud
from app.db import session_factory
from app.models import Explanation
from app.security import hash_password
from tests.browser.conftest import PASSWORD

ADMIN = "ines"


@pytest.fixture()
def admin_page(page, live_store):
    """The page signed in as an admin; the drafts the test writes are removed after it (the store is shared)."""
    _url, sae_id, engine = live_store
    with session_factory(engine)() as session:
        if crud.find_user(session, name=ADMIN) is None:
            crud.create_user(session, name=ADMIN, password_hash=hash_password(PASSWORD), role="admin")
    page.goto("/login")
    page.fill("input[name=name]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector(f"text={ADMIN} (admin)")
    yield page
    with session_factory(engine)() as session:
        session.execute(delete(Explanation).where(Explanation.sae_id == sae_id))
        session.commit()


def test_an_admin_starts_an_explain_job_and_watches_it_finish(admin_page, live_store):
    page = admin_page
    _url, sae_id, _engine = live_store
    page.goto(f"/saes/{sae_id}")
    page.evaluate("() => { window.stayed = true; }")  # gone if the page loads again
    page.fill("#explain-form input[name=features]", "20:24")
    page.click("#explain-form button[type=submit]")
    page.wait_for_selector("#explain-status[data-stage=done]", timeout=60_000)
    progress = page.locator("#explain-progress").inner_text()
    done, _, total = progress.split()[:3]
    assert done == total and int(total) > 0, progress
    assert "features/min" in page.locator("#explain-status").inner_text()
    assert page.evaluate("() => window.stayed === true"), "the page reloaded instead of polling the section"
    assert page.locator("#explain-form").is_visible()  # the form is back for the next job

    page.fill("#explain-form input[name=features]", "9:3")
    page.click("#explain-form button[type=submit]")
    assert "is not START:STOP" in page.locator("#explain-message").inner_text()

    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
