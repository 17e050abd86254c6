"""Saved steering experiments: what was asked and every row's output, behind a permalink."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import SteeringExperiment, User
from .base import NotFound


def save_steering(session: Session, *, sae_id: int, prompt: str, interventions: list[dict[str, Any]],
                  params: dict[str, Any], owner_id: int | None = None, name: str = "",
                  baseline_text: str | None = None, steered_text: str | None = None) -> SteeringExperiment:
    experiment = SteeringExperiment(sae_id=sae_id, prompt=prompt, interventions=interventions, params=params,
                                    owner_id=owner_id, name=name, baseline_text=baseline_text,
                                    steered_text=steered_text)
    session.add(experiment)
    session.commit()
    return experiment


def steering_experiments(session: Session, *, sae_id: int | None = None, owner_id: int | None = None,
                         limit: int = 50) -> list[SteeringExperiment]:
    """Saved experiments, newest first, optionally for one SAE or one owner."""
    stmt = select(SteeringExperiment)
    if sae_id is not None:
        stmt = stmt.where(SteeringExperiment.sae_id == sae_id)
    if owner_id is not None:
        stmt = stmt.where(SteeringExperiment.owner_id == owner_id)
    return list(session.scalars(stmt.order_by(SteeringExperiment.id.desc()).limit(limit)))


def find_steering(session: Session, *, sae_id: int, experiment_id: int) -> tuple[SteeringExperiment, str | None]:
    """A saved experiment of one SAE and its author's name (None once the account is deleted)."""
    row = session.execute(
        select(SteeringExperiment, User.name).outerjoin(User, User.id == SteeringExperiment.owner_id)
        .where(SteeringExperiment.id == experiment_id, SteeringExperiment.sae_id == sae_id)
    ).first()
    if row is None:
        raise NotFound(f"SAE {sae_id} has no saved steering experiment {experiment_id}")
    return row[0], row[1]
