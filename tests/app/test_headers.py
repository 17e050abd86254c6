"""Security headers on every kind of response, and pages that need no inline script under that policy."""

from __future__ import annotations

import re

from app.headers import SECURITY_HEADERS
from tests.app.conftest import make_client

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|javascript:", re.IGNORECASE)
"""A script element without src, an event-handler attribute (onclick=...), or a javascript: URL."""


def assert_secured(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, response.status_code, name)


def test_the_policy_allows_no_inline_script_and_no_framing():
    policy = dict(d.strip().split(" ", 1) for d in SECURITY_HEADERS["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] in ("same-origin", "no-referrer")


def test_every_kind_of_response_carries_the_headers(client, labeller, stored_sae):
    sae = stored_sae.id
    html = {"Accept": "text/html"}
    responses = [
        client.get("/"),  # a page
        client.get(f"/saes/{sae}/features/0"),
        client.get(f"/saes/{sae}/features", headers={"HX-Request": "true"}),  # a fragment
        client.get(f"/api/saes/{sae}"),  # JSON
        client.get("/openapi.json"),
        client.get("/docs"),
        client.get("/static/style.css"),  # a static file
        client.get("/static/nowhere.js"),
        client.get("/api/saes/9999"),  # errors: JSON, page and fragment
        client.get("/saes/9999", headers=html),
        client.get(f"/saes/{sae}/features", params={"per_page": 0}, headers=html | {"HX-Request": "true"}),
        client.get(f"/api/saes/{sae}/features", params={"per_page": 0}),
        client.post("/logout", follow_redirects=False),  # 403: no CSRF token
        client.get(f"/saes/{sae}/next-unlabelled", follow_redirects=False),  # a redirect
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 200, 200, 200, 200, 404, 404, 404, 422, 422, 403, 303]
    for response in responses:
        assert_secured(response)


def test_an_unexpected_error_is_a_500_line_with_the_headers(db_url, engine):
    """Starlette answers a bug from outside every middleware; that answer carries the headers all the same."""
    from fastapi.testclient import TestClient

    with make_client(db_url) as base:
        app = base.app

        def boom():
            raise RuntimeError("a bug")

        app.get("/api/boom")(boom)
        app.get("/boom")(boom)

        with TestClient(app, raise_server_exceptions=False) as c:
            for path, accept, kind in [("/api/boom", "*/*", "application/json"), ("/boom", "text/html", "text/plain")]:
                response = c.get(path, headers={"Accept": accept})
                assert response.status_code == 500 and response.headers["content-type"].startswith(kind)
                assert "a bug" not in response.text
                assert_secured(response)


PAGES = ["/", "/login", "/docs", "/saes/{sae}", "/saes/{sae}/features", "/saes/{sae}/features/0",
         "/saes/{sae}/search?text=hello", "/saes/{sae}/steer", "/bookmarks", "/saes/9999"]


def test_pages_hold_no_inline_script(client, labeller, stored_sae):
    for path in PAGES:
        response = client.get(path.format(sae=stored_sae.id), headers={"Accept": "text/html"})
        assert response.status_code in (200, 404) and "<html" in response.text, path
        assert INLINE_SCRIPT.findall(response.text) == [], path
