"""Search by text, per token: its piece, the features that fire most (with their labels), the next-token guesses."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from .. import crud
from ..services.inference import TextActivations


def token_rows(session: Session, sae_id: int, result: TextActivations, n: int) -> list[dict[str, Any]]:
    """One row per token of `result`, with its `n` strongest features; the search page and the API show these."""
    tops = result.top_features(n)
    labels = crud.label_texts(session, sae_id=sae_id, indices=sorted({i for row in tops for i, _ in row}))
    return [{"piece": piece, "token_id": token_id, "next": nxt,
             "features": [{"index": i, "activation": v, "label": labels.get(i)} for i, v in top]}
            for piece, token_id, nxt, top in zip(result.pieces, result.token_ids, result.next_tokens, tops)]
