"""Signing in and out: a session cookie (HttpOnly, SameSite=Lax, signed) naming a login row in the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import SESSION_COOKIE, CsrfChecked, SessionDep, SettingsDep, render
from ..models import now
from ..security import ACCOUNT_THROTTLE, CLIENT_THROTTLE, check_password, new_session, session_token_hash

router = APIRouter(tags=["auth"], include_in_schema=False)


def safe_next(target: str) -> str:
    """Only same-site paths: an open redirect to another host would help phishing."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    return _login_form(request, next, None, 200)


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(request: Request, session: SessionDep, settings: SettingsDep, name: Annotated[str, Form(max_length=64)],
          password: Annotated[str, Form(max_length=1000)], next: Annotated[str, Form()] = "/"):
    """Sign in, unless recent failures for this name or this client hold logins back (429, Retry-After).

    A held-back try is refused before its password is checked, so waiting is the only way on.
    """
    moment = now()
    account = ACCOUNT_THROTTLE.key(name)
    client = CLIENT_THROTTLE.key(request.client.host if request.client else "unknown")
    wait = crud.login_wait(session, keys=[account, client], moment=moment)
    if wait:
        refused = _login_form(request, next, f"too many failed logins: try again in {wait} s", 429)
        refused.headers["Retry-After"] = str(wait)
        return refused
    user = crud.find_user(session, name=name)
    if user is None or not check_password(user.password_hash, password):
        for key, throttle in ((account, ACCOUNT_THROTTLE), (client, CLIENT_THROTTLE)):
            crud.record_login_failure(session, key=key, throttle=throttle, moment=moment)
        return _login_form(request, next, "wrong name or password", 401)
    crud.clear_login_failures(session, key=account)
    cookie, token_hash = new_session(settings.secret_key)
    crud.start_session(session, user_id=user.id, token_hash=token_hash, max_age=settings.session_max_age)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=settings.session_max_age,
                        httponly=True, samesite="lax", secure=settings.cookie_secure)
    return response


def _login_form(request: Request, next: str, error: str | None, status_code: int) -> HTMLResponse:
    return render(request, "login.html", {"next": safe_next(next), "error": error}, status_code=status_code)


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request, session: SessionDep, settings: SettingsDep, next: Annotated[str, Form()] = "/"):
    """End this browser's login in the store too, so a copy of its cookie stops working; other logins stay.
    The browser goes back to the page it was on (`next`), or to the login form if that page needs one."""
    token_hash = session_token_hash(settings.secret_key, request.cookies.get(SESSION_COOKIE))
    if token_hash is not None:
        crud.end_session(session, token_hash=token_hash)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
