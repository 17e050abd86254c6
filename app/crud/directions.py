"""Saved steering directions: named contrastive vectors of one SAE's site, steerable like features."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import SteeringDirection
from .base import Conflict


def save_direction(session: Session, *, sae_id: int, name: str, vector: list[float], norm: float,
                   texts: dict[str, list[str]], owner_id: int | None = None) -> SteeringDirection:
    """Store a direction; a name the SAE already uses is a Conflict (nothing is written)."""
    taken = session.scalar(select(SteeringDirection.id).where(SteeringDirection.sae_id == sae_id,
                                                               SteeringDirection.name == name))
    if taken is not None:
        raise Conflict(f"this SAE already has a direction named {name!r}")
    direction = SteeringDirection(sae_id=sae_id, name=name, vector=vector, norm=norm, texts=texts, owner_id=owner_id)
    session.add(direction)
    session.commit()
    return direction


def steering_directions(session: Session, *, sae_id: int) -> list[SteeringDirection]:
    """An SAE's directions, by name."""
    return list(session.scalars(select(SteeringDirection).where(SteeringDirection.sae_id == sae_id)
                                .order_by(SteeringDirection.name)))


def directions_by_id(session: Session, *, sae_id: int, ids: Sequence[int]) -> dict[int, SteeringDirection]:
    """The SAE's directions among `ids` (an id of another SAE's direction is simply absent)."""
    if not ids:
        return {}
    rows = session.scalars(select(SteeringDirection).where(SteeringDirection.sae_id == sae_id,
                                                            SteeringDirection.id.in_(list(ids))))
    return {row.id: row for row in rows}
