"""What a page says about the model it runs: loading (and for how long), or why it could not be loaded.

A first load takes about half a minute on a small machine. Rather than hold a request (and the browser's
spinner) that long, a fragment that needs the model answers at once with a note that asks again in a
second, the model loading meanwhile on a background thread; pages that run the model show its status.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..models import Sae
from ..services.inference import ModelCache, ModelStatus, model_spec

POLL_S = 1
"""How often a waiting fragment asks again; a load takes tens of seconds, so a second is not noticed."""


def model_status(request: Request, spec: str) -> ModelStatus:
    """The status of the model `spec` in this worker process."""
    cache: ModelCache = request.app.state.models
    return cache.status(spec)


def waiting_for_model(request: Request, sae: Sae, fragment: bool) -> dict[str, Any] | None:
    """None when a `fragment` request may run the model now: it is ready, or it failed (the run tries again
    and answers why). Otherwise the context of _model_state.html polling the same URL, the model loading in
    the background meanwhile. A whole page (no JavaScript to ask again) waits for the load instead."""
    cache: ModelCache = request.app.state.models
    spec = model_spec(sae)
    if not fragment or cache.status(spec).phase not in ("idle", "loading"):
        return None
    cache.load_in_background([spec])
    return {"model": cache.status(spec), "sae": sae, "poll": f"{request.url.path}?{request.url.query}",
            "poll_s": POLL_S}
