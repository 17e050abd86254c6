"""The feature page's draft section (issue 17): the unverified draft with its scores and model, the review
buttons, and the drafts that the feature's labels started from."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..crud import FeaturePage
from ..crud.explanations import drafts_of_labels


def draft_context(session: Session, page: FeaturePage, message: str | None = None) -> dict[str, Any]:
    """What _feature_draft.html needs from the feature's stored page (its label history and draft); `message`
    reports a review that was refused (already reviewed, a human label, …)."""
    history = page.labels
    current = history[0] if history else None
    origins = drafts_of_labels(session, label_ids=[label.id for label in history if label.from_draft])
    draft = page.draft
    scores = draft.scores if draft else {}
    return {"draft_sae_id": page.sae.id, "draft_index": page.feature.feature_index, "draft": draft,
            "draft_scores": {"detection": score_text(scores.get("detection")),
                             "fuzzing": score_text(scores.get("fuzzing")),
                             "label": score_text(scores["label"].get("detection")) if "label" in scores else None},
            "draft_base_id": current.id if current else None,
            "draft_blocked": current is not None and current.source != "auto",
            "draft_origins": [(label, origins[label.id], score_text(origins[label.id].scores.get("detection")))
                              for label in history if label.id in origins],
            "draft_message": message}


def score_text(found: dict[str, Any] | None) -> str:
    """"0.85 (0.70–1.00, 10+10)" for a stored Score, "not scored" without one."""
    if not found:
        return "not scored"
    return (f"{found['accuracy']:.2f} ({found['low']:.2f}–{found['high']:.2f}, "
            f"{found['n_positive']}+{found['n_negative']})")
