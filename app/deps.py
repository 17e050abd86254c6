"""Request dependencies shared by every router: the DB session, the user, permissions, CSRF, templates.

Routes declare what they need with the `Annotated` aliases below (SessionDep, CurrentUser, ReaderDep,
LabellerDep, AdminDep) and form POSTs add `dependencies=[CsrfChecked]`; nothing here holds state of its own, it
all lives on `app.state` (see app/main.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from . import crud
from .models import User
from .security import csrf_token, csrf_valid, hash_api_token, session_token_hash
from .settings import Settings

SESSION_COOKIE = "saescope_session"
CSRF_COOKIE = "saescope_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

# Ids beyond int32 would overflow PostgreSQL's integer columns: refuse them as bad input (422), not a 500.
SaeId = Annotated[int, Path(ge=1, lt=2**31, description="Id of the SAE in the store.")]
FeatureIndex = Annotated[int, Path(ge=0, lt=2**31, description="Index of the feature in the SAE.")]
Page = Annotated[int, Query(ge=1, le=10**6)]
PerPage = Annotated[int, Query(ge=1, le=500)]
AfterIndex = Annotated[int | None, Query(ge=-1, lt=2**31, description="Start after this feature index (keyset).")]
AfterKey = Annotated[float | None, Query(allow_inf_nan=False, description="The sort value of the feature `after` names.")]
TopN = Annotated[int, Query(ge=1, le=20)]


def storable(text: str) -> str:
    """Refuse text that the store cannot keep, so it is a 422 naming the field instead of a 500 from the driver.

    JSON can carry a lone surrogate ("\\ud800"), which no UTF-8 encoder (SQLite's or PostgreSQL's) accepts;
    PostgreSQL's text type refuses NUL, which forms and query strings can send as %00.
    """
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"holds a character UTF-8 cannot encode (a lone surrogate at position {err.start})") from None
    return text


Storable = AfterValidator(storable)
"""The check every text field and parameter from a client goes through (pydantic schemas, Form and Query
parameters; label files call `storable`). Last in an Annotated: a length bound placed after a validator is
checked as a generic length ("at most 2000 items")."""
StoredText = Annotated[str, Storable]
"""For pydantic fields, whose Field(...) bounds pydantic applies before the validator."""
AfterText = Annotated[str | None, Query(max_length=200, description="The label sort's value (a label's start) of "
                                                                  "the feature `after` names."), Storable]
@dataclass(frozen=True)
class PageKey:
    """Where a page of the feature list starts by key (crud.Cursor), as the list page and the API take it: after
    the feature `after`, whose sort value rides in `after_text` for the label sort and in `after_key` for the
    others (none for the index sort, or past the labelled or scored part of the label or score sort)."""

    after: int | None = None
    after_key: float | None = None
    after_text: str | None = None

    def cursor(self, sort: crud.SortKey) -> crud.Cursor | None:
        if self.after is None:
            return None
        return (self.after_text if sort == "label" else self.after_key), self.after

    @staticmethod
    def following(last: crud.FeatureRow, sort: crud.SortKey) -> dict[str, str]:
        """The query parameters of the page by key after the row `last` (floats in repr, which reads back exact)."""
        value, index = crud.cursor_of(last, sort)
        name = "after_text" if isinstance(value, str) else "after_key"
        return {"after": str(index), **({name: value if isinstance(value, str) else repr(value)}
                                        if value is not None else {})}


def page_key(after: AfterIndex = None, after_key: AfterKey = None, after_text: AfterText = None) -> PageKey:
    return PageKey(after, after_key, after_text)


PageKeyDep = Annotated[PageKey, Depends(page_key)]


TypedText = Annotated[str, Query(max_length=2000), Storable]
"""Typed text for the model; a bound keeps each request short on a CPU."""
SearchQuery = Annotated[str, Query(max_length=200, description="Searches labels and top tokens."), Storable]
TagFilter = Annotated[str, Query(max_length=64, description="Only features with this tag."), Storable]
WholeWords = Annotated[bool, Query(description="Match `q` as whole words (\"cat\" finds \"the cat\", not \"category\").")]
TagName = Annotated[str, Form(min_length=1, max_length=64), Storable]
LabelText = Annotated[str, Form(min_length=1, max_length=2000), Storable]
Note = Annotated[str, Form(max_length=2000), Storable]


class LoginRequired(Exception):
    """Raised when a page or API call needs a signed-in user; pages redirect, the API answers 401."""


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


READ_METHODS = frozenset({"GET", "HEAD"})
"""Methods that never write (every write in the app is a POST), so their sessions read without a transaction."""


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, closed when the response is done.

    This and the other light dependencies are async so they run on the event loop: each sync one cost a
    hop to the thread pool, and under load the threads' contention for the GIL stretched the tail.
    """
    state = request.app.state
    with (state.read_sessions if request.method in READ_METHODS else state.session_factory)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def current_user(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    """The user of a Bearer API token or of a live login's session cookie; None for anonymous visitors.

    A revoked or expired token is a 401 rather than anonymous, so a script learns why it stopped working.
    """
    token = bearer_token(request)
    user: User | None
    if token is not None:
        try:
            user = crud.user_for_token(session, token_hash=hash_api_token(token))
        except crud.TokenRefused as err:
            raise HTTPException(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
    else:
        token_hash = session_token_hash(settings.secret_key, request.cookies.get(SESSION_COOKIE))
        user = None if token_hash is None else crud.session_user(session, token_hash=token_hash,
                                                                   max_age=settings.session_max_age)
    request.state.user = user
    return user


CurrentUser = Annotated[User | None, Depends(current_user)]


async def require_reader(user: CurrentUser, settings: SettingsDep) -> User | None:
    """Anyone may read when READ_OPEN is on; otherwise only signed-in users."""
    if user is None and not settings.read_open:
        raise LoginRequired()
    return user


ReaderDep = Annotated[User | None, Depends(require_reader)]


def _require(allowed: Callable[[User], bool], needs: str) -> Callable[[User | None], Awaitable[User]]:
    """A dependency that lets in a signed-in user `allowed` accepts; others get a 403 naming what is needed."""
    async def require(user: CurrentUser) -> User:
        if user is None:
            raise LoginRequired()
        if not allowed(user):
            raise HTTPException(403, f"user {user.name!r} is a {user.role}; {needs}")
        return user

    return require


require_labeller = _require(lambda u: u.can_write, "writing needs a labeller account")
"""Writing (labels, tags, imports, bookmarks) needs a labeller or admin account."""
LabellerDep = Annotated[User, Depends(require_labeller)]

require_admin = _require(lambda u: u.is_admin, "this needs an admin account")
"""Jobs that hold the server's CPU or call out to a configured endpoint (explaining features) need an admin."""
AdminDep = Annotated[User, Depends(require_admin)]


def is_htmx(request: Request) -> bool:
    """Whether the request comes from htmx, which wants a fragment rather than the whole page.

    A history restore (Back to a URL htmx pushed, missing from its cache) replaces the whole body, so it
    gets the page even from an htmx that still sends HX-Request with it.
    """
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def request_csrf_token(request: Request) -> str:
    """The CSRF token for this browser, which every form and htmx request sends back."""
    return csrf_token(request.app.state.settings.secret_key, request.state.csrf_seed)


async def check_csrf(request: Request) -> None:
    """Reject a cookie-authenticated write without the browser's CSRF token (header or form field).

    Bearer-token calls are exempt: a cross-site page cannot make the browser attach that header.
    """
    if bearer_token(request) is not None:
        return
    token = request.headers.get(CSRF_HEADER)
    if token is None and "form" in request.headers.get("content-type", ""):
        field = (await request.form()).get(CSRF_FIELD)
        token = field if isinstance(field, str) else None
    if not csrf_valid(request.app.state.settings.secret_key, request.cookies.get(CSRF_COOKIE), token):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


CsrfChecked = Depends(check_csrf)


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A template with what every page needs: the user, the CSRF token and the settings.

    One URL is a page or a fragment by HX-Request, so the response says it varies on that header: without
    Vary the browser's cache hands the fragment back for Back or a reload of the same URL.
    """
    user = getattr(request.state, "user", None)
    base = {"user": user, "can_write": user is not None and user.can_write, "htmx": is_htmx(request),
            "csrf_token": request_csrf_token(request), "settings": request.app.state.settings}
    response = get_templates(request).TemplateResponse(request, name, base | context, status_code=status_code)
    response.headers.append("Vary", "HX-Request")
    return response
