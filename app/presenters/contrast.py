"""A contrast of two text sets as the page and the API show it: each feature with its label and links."""

from __future__ import annotations

from sqlalchemy.orm import Session

from sae_core.contrast import Contrast

from .. import crud
from ..contrast_schemas import ContrastOut, FeatureContrastOut
from ..models import Sae


def contrast_out(session: Session, sae: Sae, result: Contrast, top: int) -> ContrastOut:
    """The `top` features, labelled, each linking to its page and to the playground steering with it."""
    features = result.top(top)
    labels = crud.label_texts(session, sae_id=sae.id, indices=[f.feature for f in features])
    return ContrastOut(
        sae_id=sae.id, n_a=len(result.a.means_NF), n_b=len(result.b.means_NF), tokens_a=result.a.tokens,
        tokens_b=result.b.tokens,
        features=[FeatureContrastOut(feature=f.feature, label=labels.get(f.feature), mean_a=f.mean_a, mean_b=f.mean_b,
                                     effect=f.effect, fired_a=f.fired_a, fired_b=f.fired_b,
                                     url=f"/saes/{sae.id}/features/{f.feature}",
                                     steer_url=f"/saes/{sae.id}/steer?feature={f.feature}")
                  for f in features])


def split_texts(box: str) -> list[str]:
    """A form's text box as a set: one text per line, blank lines left out."""
    return [line.strip() for line in box.splitlines() if line.strip()]
