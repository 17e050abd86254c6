"""Search by text: per token its piece, the features that fire most and the next-token guesses; and the
features ranked over the whole text, with dense and start-token features hidden on request."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from sqlalchemy.orm import Session

from .. import crud
from ..services.inference import TextActivations

RANKED = 20
"""How many features the whole-text ranking lists."""


@dataclass(frozen=True)
class Hide:
    """Which features the reader asked to leave out of both the per-token lists and the ranking."""

    dense: bool = False
    """Features the recording found dense: they fire on most tokens of any text and crowd out the rest."""
    start: bool = False
    """Features that fire mostly on the start token (BOS), which is the model's, not the text's."""


def start_token_features(acts_TF: torch.Tensor) -> torch.Tensor:
    """Bool per feature: it fires on the start token at least as much as on all the text's tokens together."""
    start_F = acts_TF[0]
    return (start_F > 0) & (start_F >= acts_TF[1:].clamp(min=0).sum(dim=0))


def hidden_features(session: Session, sae_id: int, acts_TF: torch.Tensor, hide: Hide) -> torch.Tensor:
    """Bool per feature: whether `hide` leaves it out of this text's results."""
    hidden_F = torch.zeros(acts_TF.shape[1], dtype=torch.bool)
    if hide.dense:
        hidden_F[crud.dense_features(session, sae_id=sae_id)] = True
    if hide.start:
        hidden_F |= start_token_features(acts_TF)
    return hidden_F


def without(result: TextActivations, hidden_F: torch.Tensor) -> TextActivations:
    """The result with the hidden features' activations set to zero, so no list shows them."""
    return replace(result, acts_TF=result.acts_TF.masked_fill(hidden_F, 0.0)) if hidden_F.any() else result


def whole_text(result: TextActivations, n: int) -> list[dict[str, Any]]:
    """The `n` features with the highest activation anywhere in the text (the start token left out, as it is
    not the text's): each with that peak, the token it is on, and on how many of the text's tokens it fires."""
    acts_TF = result.acts_TF[1:]
    if acts_TF.shape[0] == 0:
        return []
    peak_F, where_F = acts_TF.max(dim=0)
    values, indices = peak_F.topk(min(n, peak_F.shape[0]))
    fires_F = (acts_TF > 0).sum(dim=0)
    return [{"index": i, "peak": v, "piece": result.pieces[1 + int(where_F[i])], "tokens": int(fires_F[i])}
            for i, v in zip(indices.tolist(), values.tolist()) if v > 0]


def token_rows(session: Session, sae_id: int, result: TextActivations, n: int) -> list[dict[str, Any]]:
    """One row per token of `result`, with its `n` strongest features; the search page and the API show these."""
    tops = result.top_features(n)
    labels = crud.label_texts(session, sae_id=sae_id, indices=sorted({i for row in tops for i, _ in row}))
    return [{"piece": piece, "token_id": token_id, "next": nxt,
             "features": [{"index": i, "activation": v, "label": labels.get(i)} for i, v in top]}
            for piece, token_id, nxt, top in zip(result.pieces, result.token_ids, result.next_tokens, tops)]


def search_context(session: Session, sae_id: int, result: TextActivations, n: int, hide: Hide) -> dict[str, Any]:
    """What the search page shows of a text: the ranking over it, the rows per token, and every feature's brief."""
    shown = without(result, hidden_features(session, sae_id, result.acts_TF, hide))
    rows, ranked = token_rows(session, sae_id, shown, n), whole_text(shown, RANKED)
    indices = {f["index"] for row in rows for f in row["features"]} | {f["index"] for f in ranked}
    return {"rows": rows, "ranked": ranked, "briefs": crud.feature_briefs(session, sae_id=sae_id, indices=indices)}
