"""The web app factory: `create_app(settings)` builds everything; nothing happens at import time.

Run it with `saescope serve` or `uvicorn --factory app.main:create_app` (factory mode lets several workers
each build their own engine and model cache).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import crud
from .db import read_engine, serving_engine, session_factory
from .deps import CSRF_COOKIE
from .errors import install_error_handlers
from .headers import SecurityHeaders
from .presenters.heatmaps import TokenTables
from .routes import ROUTERS
from .routes import drafts as draft_routes
from .security import new_csrf_seed
from .services.attribution import AttributionService
from .services.explain import ExplainService, explainer_choices
from .services.heap import freeze_long_lived
from .services.inference import ModelCache, model_spec
from .services.steering import SteeringWorker, judge_config, steer_limits
from .settings import Settings
from .templating import install_filters

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A saescope web app on the store named by `settings` (default: from the environment)."""
    settings = settings or Settings()
    if not settings.secret_key:
        settings = settings.model_copy(update={"secret_key": secrets.token_hex(32)})
    engine = serving_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        freeze_long_lived()
        if settings.preload_models:
            app.state.preload = preload_models(app)
        yield
        app.state.steering.close()
        app.state.attribution.close()
        app.state.explain.close()
        engine.dispose()

    app = FastAPI(title="saescope", summary="Browse, search and label sparse-autoencoder features.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.read_sessions = session_factory(read_engine(engine))
    app.state.templates = Jinja2Templates(directory=TEMPLATES_DIR)
    app.state.templates.env.auto_reload = False  # they ship with the package: no stat() of each per render
    install_filters(app.state.templates.env)
    app.state.models = ModelCache(device=settings.inference_device)
    app.state.token_tables = TokenTables()
    app.state.steering = SteeringWorker(app.state.models, steer_limits(settings), settings.steer_retry_after,
                                        judge_config(settings))
    app.state.attribution = AttributionService(app.state.models, app.state.session_factory)
    app.state.explain = ExplainService(app.state.session_factory, explainer_choices(settings))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(draft_routes.router)
    app.get("/docs", include_in_schema=False)(api_docs)
    install_error_handlers(app)
    app.add_middleware(CsrfSeedCookie, secure=settings.cookie_secure)
    app.add_middleware(SecurityHeaders)
    return app


def preload_models(app: FastAPI) -> threading.Thread | None:
    """Start loading the models of the store's SAEs in the background: start-up does not wait for them, and
    pages say they are loading (or why one failed) meanwhile. The thread, for tests to join."""
    try:
        with app.state.read_sessions() as session:
            specs = [model_spec(sae) for sae in crud.list_saes(session)]
    except SQLAlchemyError as err:
        log.error("cannot preload models: the store could not be read: %s", str(err).splitlines()[0])
        return None
    log.info("loading %d model(s) in the background: %s", len(set(specs)), ", ".join(sorted(set(specs))))
    return app.state.models.load_in_background(specs)


def api_docs(request: Request) -> HTMLResponse:
    """The OpenAPI page with Swagger UI served from static/ (FastAPI's default loads it from a CDN and starts
    it with an inline script, which the Content-Security-Policy refuses)."""
    return request.app.state.templates.TemplateResponse(request, "docs.html", {"openapi_url": request.app.openapi_url})


class CsrfSeedCookie:
    """Give each browser a random CSRF seed cookie; forms carry a token derived from it (see deps.check_csrf).

    A plain ASGI middleware rather than @app.middleware("http"), whose request/response wrapping costs
    a noticeable share of a fast page's time.
    """

    def __init__(self, app: ASGIApp, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seed = Request(scope).cookies.get(CSRF_COOKIE)
        scope.setdefault("state", {})["csrf_seed"] = seed or new_csrf_seed()
        if seed is not None:
            return await self.app(scope, receive, send)
        cookie = SimpleCookie()
        cookie[CSRF_COOKIE] = scope["state"]["csrf_seed"]
        # Morsel writes a flag attribute (HttpOnly, Secure) for any non-empty value.
        cookie[CSRF_COOKIE].update({"path": "/", "httponly": "1", "samesite": "lax", "secure": "1" if self.secure else ""})

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", cookie[CSRF_COOKIE].OutputString())
            await send(message)

        await self.app(scope, receive, send_with_cookie)
