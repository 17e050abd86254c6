"""One router per resource; create_app includes ROUTERS in this order (append new ones at the end)."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    api,
    auth,
    bookmarks,
    circuits,
    contrast,
    directions,
    explain,
    features,
    home,
    labels,
    maps,
    model_state,
    search,
    steer,
)

ROUTERS: list[APIRouter] = [home.router, auth.router, features.router, labels.router, search.router,
                            bookmarks.router, api.router, steer.router, contrast.router,
                            directions.router, circuits.router]
ROUTERS += [maps.router, maps.api]  # issue 16: the feature map
ROUTERS += [explain.router]  # issue 17: explain jobs from the SAE page
ROUTERS += [model_state.router]  # issue 21: the model's loading state
