"""Signing in and out with a session cookie (HttpOnly, SameSite=Lax, signed; see app/security.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import SESSION_COOKIE, CsrfChecked, SessionDep, SettingsDep, render
from ..security import check_password, session_cookie

router = APIRouter(tags=["auth"], include_in_schema=False)


def safe_next(target: str) -> str:
    """Only same-site paths: an open redirect to another host would help phishing."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(request: Request, session: SessionDep, settings: SettingsDep, name: Annotated[str, Form(max_length=64)],
          password: Annotated[str, Form(max_length=1000)], next: Annotated[str, Form()] = "/"):
    user = crud.find_user(session, name=name)
    if user is None or not check_password(user.password_hash, password):
        return render(request, "login.html", {"next": safe_next(next), "error": "wrong name or password"},
                      status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_cookie(settings.secret_key, user.id), max_age=settings.session_max_age,
                        httponly=True, samesite="lax", secure=settings.cookie_secure)
    return response


@router.post("/logout", dependencies=[CsrfChecked])
def logout():
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
