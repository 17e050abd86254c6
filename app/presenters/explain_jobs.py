"""The SAE page's explain section (issue 17): the last explain job's progress, polled while it runs, and for
admins the form that starts one."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..crud.explanations import draft_count
from ..models import User
from ..services.explain import ExplainJob, ExplainService, progress_text


def explain_section(session: Session, service: ExplainService, *, sae_id: int, user: User | None,
                    message: str | None = None, form: dict[str, Any] | None = None) -> dict[str, Any]:
    """What _explain_job.html needs. `message` says why a start was refused; `form` holds what was sent, so a
    refused form comes back as it was filled in."""
    job = service.job(sae_id)
    return {"explain_sae_id": sae_id, "explain_job": job and job_view(job),
            "explain_drafts": draft_count(session, sae_id=sae_id),
            "explain_admin": user is not None and user.is_admin,
            "explain_choices": {key: choice.title for key, choice in service.choices.items()},
            "explain_message": message,
            "explain_form": form or {"features": "", "unlabelled": False, "explainer": next(iter(service.choices), "")}}


def job_view(job: ExplainJob) -> dict[str, Any]:
    """A job as the section shows it: stage, counts, features/min and why it failed."""
    rate = job.per_minute
    finished = job.total == 0 and job.stage == "done"
    return {"running": job.running, "stage": job.stage, "explainer": job.explainer, "done": job.done,
            "total": job.total, "progress": progress_text(job), "error": job.error,
            "rate": f"{rate:.1f} features/min" if rate is not None else None,
            "note": "nothing to explain: every selected live feature already has an explanation" if finished else None}
