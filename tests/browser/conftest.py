"""A live server on a free port and Debian's Chromium driven by Playwright.

Without Chromium or Playwright these tests skip, saying why; with SAESCOPE_REQUIRE_BROWSER=1 (CI) they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from app import crud
from app.db import make_engine, session_factory
from app.ingest import store_record
from app.main import create_app
from app.migrate import upgrade
from app.pipeline import register_sae
from app.security import hash_password
from app.settings import Settings
from tests.spawn import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser-test-pw"


def _missing(reason: str) -> None:
    if os.environ.get("SAESCOPE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} and SAESCOPE_REQUIRE_BROWSER=1")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    if shutil.which(CHROMIUM) is None:
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def live_store(tmp_path_factory, web_sae):
    """A SQLite store holding the recorded web SAE and a labeller account."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    loaded, record, model_spec = web_sae
    with session_factory(engine)() as session:
        sae = register_sae(session, loaded=loaded, model_spec=model_spec)
        store_record(session, sae_id=sae.id, record=record, dataset="random tokens")
        crud.create_user(session, name="lea", password_hash=hash_password(PASSWORD), role="labeller")
    yield url, sae.id, engine
    engine.dispose()


@pytest.fixture(scope="session")
def live_app(live_store, tiny_chat_model_dir):
    """The app the live server serves, for tests that look at its state (the steering worker, the model); its
    local explainer is the tiny chat model, so an explain job takes seconds."""
    url, _sae_id, _engine = live_store
    return create_app(Settings(database_url=url, secret_key="browser", explainer_local_model=str(tiny_chat_model_dir)))


@contextmanager
def serving(app) -> Iterator[str]:
    """uvicorn serving `app` in a thread; yields its base URL and stops it on leaving."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server(live_app):
    """The live app served for the whole session."""
    with serving(live_app) as url:
        yield url


@pytest.fixture()
def page(browser, live_server):
    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
