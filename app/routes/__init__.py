"""One router per resource; create_app includes ROUTERS in this order (append new ones at the end)."""

from __future__ import annotations

from fastapi import APIRouter

from . import home

ROUTERS: list[APIRouter] = [home.router]
