"""The web app factory: `create_app(settings)` builds everything; nothing happens at import time.

Run it with `saescope serve` or `uvicorn --factory app.main:create_app` (factory mode lets several workers
each build their own engine and model cache).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .db import make_engine, session_factory
from .deps import CSRF_COOKIE
from .errors import install_error_handlers
from .routes import ROUTERS
from .security import new_csrf_seed
from .services.inference import ModelCache
from .settings import Settings
from .templating import install_filters

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """A saescope web app on the store named by `settings` (default: from the environment)."""
    settings = settings or Settings()
    if not settings.secret_key:
        settings = settings.model_copy(update={"secret_key": secrets.token_hex(32)})
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="saescope", summary="Browse, search and label sparse-autoencoder features.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.templates = Jinja2Templates(directory=TEMPLATES_DIR)
    install_filters(app.state.templates.env)
    app.state.models = ModelCache(device=settings.device)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.get("/docs", include_in_schema=False)(api_docs)
    install_error_handlers(app)
    app.middleware("http")(csrf_seed_cookie)
    return app


def api_docs() -> HTMLResponse:
    """The OpenAPI page with Swagger UI served from static/ (FastAPI's default loads it from a CDN)."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="saescope API",
                               swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css",
                               swagger_favicon_url="/static/favicon.svg")


async def csrf_seed_cookie(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Give each browser a random CSRF seed cookie; forms carry a token derived from it (see deps.check_csrf)."""
    seed = request.cookies.get(CSRF_COOKIE)
    request.state.csrf_seed = seed or new_csrf_seed()
    response = await call_next(request)
    if seed is None:
        settings: Settings = request.app.state.settings
        response.set_cookie(CSRF_COOKIE, request.state.csrf_seed, httponly=True, samesite="lax",
                            secure=settings.cookie_secure)
    return response
