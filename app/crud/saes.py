"""SAEs in the store: registering one, listing them, finding one by id or name."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Sae
from .base import NotFound, add_unique


def create_sae(session: Session, *, name: str, **fields: Any) -> Sae:
    """Register an SAE under a unique name; `fields` are Sae columns (model_name, site, d_sae, ...)."""
    return add_unique(session, Sae(name=name, **fields), f"an SAE named {name!r} is already in the store")


def list_saes(session: Session) -> list[Sae]:
    return list(session.scalars(select(Sae).order_by(Sae.model_name, Sae.site, Sae.name)))


def find_sae(session: Session, *, ref: str | int) -> Sae:
    """An SAE by id or by name."""
    sae = None
    if isinstance(ref, int) or str(ref).isdigit():
        sae = session.get(Sae, int(ref))
    sae = sae or session.scalar(select(Sae).where(Sae.name == str(ref)))
    if sae is None:
        raise NotFound(f"no SAE {ref!r} in the store (saescope import or record adds one)")
    return sae
