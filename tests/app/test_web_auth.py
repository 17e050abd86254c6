"""Accounts: login, revocable sessions, login throttling, CSRF, roles, closed reading, API tokens, the user CLI."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app import crud
from app.cli import app as cli
from app.db import session_factory
from app.models import ApiToken, LoginFailures, UserSession, as_utc, now
from app.security import ACCOUNT_THROTTLE, CLIENT_THROTTLE, hash_api_token, new_api_token
from tests.app.conftest import add_user, csrf_of, log_in, make_client
from tests.conftest import invoke_cli

SESSION = "saescope_session"
PASSWORD = "pw-" + "x" * 8


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
    client.cookies.set(SESSION, f"{user.id}.9999999999.deadbeef")
    assert "ada (labeller)" not in client.get("/").text
    client.cookies.set(SESSION, "some-token.deadbeef")
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


# Sessions live in the store: ending one there stops every copy of its cookie.


def signed_in(client) -> bool:
    return "ada (" in client.get("/").text


def copy_of_cookie(db_url: str, client):
    """Another browser holding a copy of `client`'s session cookie (as a thief would)."""
    other = make_client(db_url)
    other.cookies.set(SESSION, client.cookies[SESSION])
    return other


def test_logout_ends_that_login_for_every_copy_of_its_cookie_but_not_other_logins(db_url, client, labeller):
    with copy_of_cookie(db_url, client) as thief, make_client(db_url) as laptop:
        log_in(laptop, "ada")
        assert signed_in(thief)
        client.post("/logout", data={"csrf_token": labeller[1]})
        assert not signed_in(thief) and not signed_in(client)
        assert signed_in(laptop)


@pytest.mark.parametrize("change", [("passwd", "ada", "--generate"), ("role", "ada", "viewer")])
def test_a_password_or_role_change_ends_every_login(db_url, client, labeller, change):
    with copy_of_cookie(db_url, client) as thief, make_client(db_url) as laptop:
        log_in(laptop, "ada")
        code, out = invoke_cli(cli, "user", *change, "--db", db_url)
        assert code == 0 and "its logins are ended" in out, out
        assert not signed_in(thief) and not signed_in(client) and not signed_in(laptop)


def test_passwd_changes_the_password_and_role_the_role(db_url, client, session):
    add_user(session, "ada", role="viewer")
    code, out = invoke_cli(cli, "user", "passwd", "ada", "--db", db_url, input="n3w-pass\nn3w-pass\n")
    assert code == 0, out
    assert invoke_cli(cli, "user", "role", "ada", "admin", "--db", db_url)[0] == 0
    response = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert response.status_code == 401
    log_in(client, "ada", "n3w-pass")
    assert "ada (admin)" in client.get("/").text


@pytest.mark.parametrize(("args", "message"), [
    (("passwd", "nobody", "--generate"), "no user 'nobody'"),
    (("role", "nobody", "admin"), "no user 'nobody'"),
    (("role", "ada", "boss"), "unknown role 'boss'"),
])
def test_account_changes_refuse_unknown_users_and_roles(db_url, engine, args, message):
    code, out = invoke_cli(cli, "user", *args, "--db", db_url)
    assert code == 2 and message in out, out


def test_a_login_older_than_the_session_max_age_is_refused_by_the_server(db_url, client, labeller, session):
    session.execute(update(UserSession).values(created_at=now() - timedelta(days=15)))
    session.commit()
    assert not signed_in(client)


# API tokens: last use, expiry, revocation.


def make_token(session, user, expires_at=None) -> tuple[ApiToken, dict[str, str]]:
    token = new_api_token()
    row = crud.add_api_token(session, user_id=user.id, name="script", token_hash=hash_api_token(token),
                             expires_at=expires_at)
    return row, {"Authorization": f"Bearer {token}"}


def last_used(session, token: ApiToken):
    session.expire_all()
    return session.get(ApiToken, token.id).last_used_at


def test_a_tokens_last_use_is_written_at_most_once_a_minute(client, session):
    row, headers = make_token(session, add_user(session, "bot"))
    assert last_used(session, row) is None
    assert client.get("/api/saes", headers=headers).status_code == 200
    first = last_used(session, row)
    assert first is not None and now() - as_utc(first) < timedelta(seconds=30)
    client.get("/api/saes", headers=headers)
    assert last_used(session, row) == first
    session.execute(update(ApiToken).values(last_used_at=now() - timedelta(minutes=2)))
    session.commit()
    client.get("/api/saes", headers=headers)
    assert now() - as_utc(last_used(session, row)) < timedelta(seconds=30)


def test_expired_and_revoked_tokens_are_a_401_json_error(client, session):
    user = add_user(session, "bot")
    _, expired = make_token(session, user, expires_at=now() - timedelta(seconds=1))
    revoked, headers = make_token(session, user, expires_at=now() + timedelta(days=1))
    assert client.get("/api/saes", headers=headers).status_code == 200
    crud.revoke_api_token(session, token_id=revoked.id)
    for token_headers, state in [(expired, "expired"), (headers, "revoked")]:
        response = client.get("/api/saes", headers=token_headers)
        assert response.status_code == 401 and response.json() == {"detail": f"API token 'script' is {state}"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_tokens_are_listed_expire_and_are_revoked_from_the_cli(db_url, client, session):
    add_user(session, "ada")
    token = invoke_cli(cli, "user", "token", "ada", "--label", "ci", "--expires-days", "3", "--db", db_url)[1].strip()
    code, out = invoke_cli(cli, "user", "tokens", "ada", "--db", db_url)
    assert code == 0 and token not in out, out
    header, line = out.splitlines()
    assert header.split() == ["id", "label", "created", "last", "used", "expires", "state"]
    expiry = (now() + timedelta(days=3)).strftime("%Y-%m-%d")
    assert line.split()[1] == "ci" and "never" in line and expiry in line and line.endswith("active")
    client.get("/api/saes", headers={"Authorization": f"Bearer {token}"})
    assert "never" not in invoke_cli(cli, "user", "tokens", "ada", "--db", db_url)[1]
    token_id = line.split()[0]
    code, out = invoke_cli(cli, "user", "revoke", token_id, "--db", db_url)
    assert code == 0 and f"token {token_id} ('ci' of 'ada') revoked" in out, out
    assert invoke_cli(cli, "user", "tokens", "ada", "--db", db_url)[1].rstrip().endswith("revoked")
    assert client.get("/api/saes", headers={"Authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.parametrize(("args", "message"), [
    (("revoke", "999"), "no API token with id 999"),
    (("tokens", "nobody"), "no user 'nobody'"),
    (("token", "ada", "--expires-days", "0"), "--expires-days"),
])
def test_token_commands_refuse_bad_input(db_url, session, args, message):
    add_user(session, "ada")
    code, out = invoke_cli(cli, "user", *args, "--db", db_url)
    assert code == 2 and message in out, out


def test_tokens_says_when_a_user_has_none(db_url, session):
    add_user(session, "ada")
    code, out = invoke_cli(cli, "user", "tokens", "ada", "--db", db_url)
    assert code == 0 and "'ada' has no API tokens" in out


# Failed logins slow further tries, per account and per client, counted in the store.


def try_login(client, name: str, password: str):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(client)},
                       follow_redirects=False)


def test_failed_logins_hold_the_account_back_then_it_recovers(db_url, client, session):
    """Failures through two app instances (as two workers would be) add up, since they are counted in the store."""
    add_user(session, "ada")
    with make_client(db_url) as worker2:
        for i in range(ACCOUNT_THROTTLE.free):
            assert try_login((client, worker2)[i % 2], "ada", "wrong").status_code == 401
        refused = try_login(worker2, "ada", PASSWORD)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "too many failed logins: try again in 1 s" in refused.text
        time.sleep(1.05)
        assert try_login(client, "ada", PASSWORD).status_code == 303
        assert try_login(worker2, "ada", "wrong").status_code == 401


def test_one_client_trying_many_names_is_held_back(client, session):
    add_user(session, "ada")
    for i in range(CLIENT_THROTTLE.free):
        assert try_login(client, f"guess{i}", "wrong").status_code == 401
    assert try_login(client, "ada", PASSWORD).status_code == 429


def failures_at(session, key: str, seconds: list[float]) -> list[int]:
    """The wait after failures under `key` at each of these times (seconds from a fixed start)."""
    start = now()
    waits = []
    for offset in seconds:
        moment = start + timedelta(seconds=offset)
        crud.record_login_failure(session, key=key, throttle=ACCOUNT_THROTTLE, moment=moment)
        waits.append(crud.login_wait(session, keys=[key, "client:elsewhere"], moment=moment))
    return waits


def test_the_wait_doubles_to_a_minute_and_is_forgotten_after_a_quarter_hour(session):
    assert failures_at(session, "account:ada", [0, 1, 2, 3, 4, 10, 20, 30, 40, 50, 60, 70, 200]) == [
        0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert failures_at(session, "account:ada", [200 + ACCOUNT_THROTTLE.forget_after_s + 1]) == [0]
    crud.clear_login_failures(session, key="account:ada")
    assert session.scalar(select(LoginFailures)) is None


def test_simultaneous_failures_are_all_counted(engine, session):
    """Workers failing at the same instant on a new key race to insert its row; each failure still counts."""
    sessions = session_factory(engine)
    moment = now()
    barrier = threading.Barrier(6)

    def fail_once() -> None:
        with sessions() as own:
            barrier.wait()
            crud.record_login_failure(own, key="client:10.0.0.1", throttle=CLIENT_THROTTLE, moment=moment)

    threads = [threading.Thread(target=fail_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert session.get(LoginFailures, "client:10.0.0.1").failures == 6


def test_log_in_and_log_out_come_back_to_the_page(client, labeller, stored_sae):
    token = labeller[1]
    page = f"/saes/{stored_sae.id}/features?q=a%20b&state=alive"
    response = client.post("/logout", data={"csrf_token": token, "next": page}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == page
    assert client.post("/logout", data={"csrf_token": token, "next": "//evil.example"},
                       follow_redirects=False).headers["location"] == "/"
    html = client.get(page).text
    assert f'href="/login?next=/saes/{stored_sae.id}/features%3Fq%3Da%2520b%26state%3Dalive"' in html
