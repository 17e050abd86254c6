"""Accounts: login, session cookie, CSRF, roles, closed reading, Bearer API tokens, the user CLI."""

from __future__ import annotations

import pytest

from app import crud
from app.cli import app as cli
from app.security import hash_api_token, new_api_token
from tests.app.conftest import add_user, csrf_of, log_in, make_client
from tests.conftest import invoke_cli


def test_login_sets_an_httponly_samesite_session_cookie(client, session):
    add_user(session, "ada")
    token = csrf_of(client)
    response = client.post("/login", data={"name": "ada", "password": "pw-xxxxxxxx", "csrf_token": token,
                                           "next": "/saes/1"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/saes/1"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("saescope_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "ada (labeller)" in client.get("/").text


def test_wrong_password_and_unknown_user_are_refused(client, session):
    add_user(session, "ada")
    token = csrf_of(client)
    for name, password in [("ada", "wrong"), ("bob", "pw-xxxxxxxx")]:
        response = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
        assert response.status_code == 401 and "wrong name or password" in response.text
    assert "saescope_session" not in client.cookies


def test_login_needs_the_csrf_token(client, session):
    add_user(session, "ada")
    csrf_of(client)
    response = client.post("/login", data={"name": "ada", "password": "pw-xxxxxxxx", "csrf_token": "forged"})
    assert response.status_code == 403


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(client, session, target):
    add_user(session, "ada")
    response = client.post("/login", data={"name": "ada", "password": "pw-xxxxxxxx", "csrf_token": csrf_of(client),
                                           "next": target}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_a_forged_session_cookie_is_ignored(client, session, stored_sae):
    user = add_user(session, "ada")
    client.cookies.set("saescope_session", f"{user.id}.9999999999.deadbeef")
    assert "ada (labeller)" not in client.get("/").text


def test_logout_ends_the_session(client, labeller):
    _user, token = labeller
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert "Log in" in client.get("/").text


def test_writing_needs_csrf_even_when_signed_in(client, labeller, stored_sae):
    url = f"/saes/{stored_sae.id}/features/0/label"
    assert client.post(url, data={"text": "x", "base_label_id": ""}).status_code == 403
    assert client.post(url, data={"text": "x", "base_label_id": "", "csrf_token": "nope"}).status_code == 403
    assert client.post(url, data={"text": "x"}, headers={"X-CSRF-Token": labeller[1]},
                       follow_redirects=False).status_code == 303


def test_anonymous_writes_go_to_login_and_viewers_are_refused(client, session, stored_sae):
    url = f"/saes/{stored_sae.id}/features/0/label"
    response = client.post(url, data={"text": "x", "csrf_token": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    add_user(session, "vic", role="viewer")
    token = log_in(client, "vic")
    assert client.post(url, data={"text": "x", "csrf_token": token}).status_code == 403
    assert crud.label_history(session, sae_id=stored_sae.id, feature_index=0) == []


def test_closed_reading_needs_an_account(db_url, engine, session, stored_sae):
    add_user(session, "vic", role="viewer")
    with make_client(db_url, read_open=False) as client:
        page = client.get(f"/saes/{stored_sae.id}", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == f"/login?next=/saes/{stored_sae.id}"
        assert client.get("/api/saes").status_code == 401
        log_in(client, "vic")
        assert client.get(f"/saes/{stored_sae.id}").status_code == 200
        assert client.get("/api/saes").status_code == 200


def test_bearer_tokens_act_as_their_user_without_csrf(db_url, engine, session, stored_sae):
    user = add_user(session, "bot")
    token = new_api_token()
    crud.add_api_token(session, user_id=user.id, name="script", token_hash=hash_api_token(token))
    with make_client(db_url, read_open=False) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/saes", headers=headers).status_code == 200
        created = client.post(f"/api/saes/{stored_sae.id}/features/1/labels", json={"text": "from a script"},
                              headers=headers)
        assert created.status_code == 201 and created.json()["author"] == "bot"
        assert client.get("/api/saes", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_api_writes_with_a_session_cookie_need_the_csrf_header(client, labeller, stored_sae):
    url = f"/api/saes/{stored_sae.id}/features/1/labels"
    assert client.post(url, json={"text": "x"}).status_code == 403
    assert client.post(url, json={"text": "x"}, headers={"X-CSRF-Token": labeller[1]}).status_code == 201


def test_user_add_and_token_commands(db_url, engine, session):
    code, out = invoke_cli(cli, "user", "add", "ada", "--role", "labeller", "--generate", "--db", db_url)
    assert code == 0, out
    password = out.split("password (shown once): ")[1].strip()
    code, out = invoke_cli(cli, "user", "add", "bob", "--db", db_url, input="s3cret\ns3cret\n")
    assert code == 0 and "bob' added as viewer" in out
    assert invoke_cli(cli, "user", "add", "eve", "--role", "boss", "--db", db_url)[0] == 2
    assert invoke_cli(cli, "user", "add", "ada", "--generate", "--db", db_url)[0] == 2
    token = invoke_cli(cli, "user", "token", "ada", "--db", db_url)[1].strip()
    assert crud.user_for_token(session, token_hash=hash_api_token(token)).name == "ada"
    assert invoke_cli(cli, "user", "token", "nobody", "--db", db_url)[0] == 2
    with make_client(db_url) as client:
        log_in(client, "ada", password)
        assert "ada (labeller)" in client.get("/").text
