"""Errors as JSON for the API and as a page for browsers; user input never produces a 500."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import crud
from .deps import LoginRequired, is_htmx, render
from .headers import SECURITY_HEADERS
from .services.inference import InferenceUnavailable
from .services.steering import WorkerBusy


def wants_json(request: Request) -> bool:
    """API paths and clients that do not ask for HTML get JSON errors."""
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def error_response(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """JSON for the API, a line in place of the fragment for htmx, else an error page."""
    if is_htmx(request) and not request.url.path.startswith("/api/"):
        return render(request, "_error.html", {"detail": detail}, status_code=status)
    if wants_json(request):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    return render(request, "error.html", {"status": status, "detail": detail}, status_code=status)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def not_found(request: Request, exc: crud.NotFound) -> Response:
    return error_response(request, 404, str(exc))


async def conflict(request: Request, exc: crud.Conflict) -> Response:
    return error_response(request, 409, str(exc))


async def unstorable(request: Request, exc: DataError) -> Response:
    """Values the database refuses (PostgreSQL rejects NUL characters in text): bad input, not a crash."""
    return error_response(request, 422, f"the database refused a value: {str(exc.orig).splitlines()[0]}")


async def unavailable(request: Request, exc: InferenceUnavailable) -> Response:
    return error_response(request, 503, str(exc))


async def busy(request: Request, exc: WorkerBusy) -> Response:
    return error_response(request, 429, str(exc), {"Retry-After": str(exc.retry_after)})


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinity; a request that sent one (Python's json reads them) gets it back as text."""
    return value if math.isfinite(value) else str(value)


def _json_text(value: str) -> str:
    """Text echoed back in an error as UTF-8 can carry it: a lone surrogate the request sent becomes its escape."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


async def invalid(request: Request, exc: RequestValidationError) -> Response:
    if wants_json(request) and not is_htmx(request):
        errors = jsonable_encoder(exc.errors(), custom_encoder={float: _json_number, str: _json_text})
        return JSONResponse({"detail": errors}, status_code=422)
    problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
    return error_response(request, 422, problems)


async def login_required(request: Request, _exc: Exception) -> Response:
    """Pages send the browser to the login form (htmx via HX-Redirect); the API answers 401."""
    target = f"/login?next={request.url.path}"
    if request.url.path.startswith("/api/") or request.headers.get("authorization"):
        return JSONResponse({"detail": "sign in or send an API token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def server_error(request: Request, _exc: Exception) -> Response:
    """A bug: the server logs its traceback; the client gets one line. Starlette answers these from outside
    every middleware, so this answer carries the security headers itself."""
    detail = "internal server error: the server log has the details"
    response = JSONResponse({"detail": detail}, status_code=500) if wants_json(request) else PlainTextResponse(detail, 500)
    response.headers.update(SECURITY_HEADERS)
    return response


Handler = Callable[[Request, Any], Awaitable[Response]]
"""Starlette calls each handler with an instance of the class it is registered for."""

HANDLERS: dict[type[Exception], Handler] = {
    StarletteHTTPException: http_error,
    HTTPException: http_error,
    crud.NotFound: not_found,
    crud.Conflict: conflict,
    RequestValidationError: invalid,
    LoginRequired: login_required,
    InferenceUnavailable: unavailable,
    DataError: unstorable,
    WorkerBusy: busy,
    Exception: server_error,  # Starlette gives this one to its outermost middleware
}


def install_error_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
