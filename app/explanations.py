"""The bridge between the store and sae_core.explain: a feature's rows as FeatureEvidence, and the explain job
that drafts and scores features one by one, committing each, so a killed job resumes where it stopped."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from sae_core.explain import (
    ChatModel,
    EndpointChatModel,
    EndpointConfig,
    ExplainConfig,
    FeatureEvidence,
    LocalChatModel,
    Window,
    explain_and_score,
    score,
)
from sae_core.lm import DEFAULT_MODEL

from . import crud
from .crud.explanations import add_explanation, explained_indices
from .models import Context, Example, Feature, Label, Sae


class EvidenceReader:
    """Reads each feature's evidence from one SAE's recording; the SAE's context list is read once."""

    def __init__(self, session: Session, sae_id: int, config: ExplainConfig):
        self.session, self.sae_id, self.config = session, sae_id, config
        rows = session.execute(select(Context.id, Context.context_index).where(Context.sae_id == sae_id)
                               .order_by(Context.id))
        self.contexts: list[tuple[int, int]] = [(row.id, row.context_index) for row in rows]

    def evidence(self, index: int) -> FeatureEvidence:
        """Top and sampled windows, promoted tokens, and contexts where the feature is not recorded firing: drawn
        at random, and from the top examples of its nearest features (hard negatives).

        A negative is a context none of the feature's own examples come from. The recording keeps a sample of
        where a feature fires, not all of it, so a feature may still fire weakly in one: the chance is about
        its density times the window length, and such a context counts against a right explanation.
        """
        page = crud.feature_page(self.session, sae_id=self.sae_id, feature_index=index)
        own = {row.context_index for row in page.examples}
        rng = random.Random(self.config.seed * 1_000_003 + index)
        candidates = rng.sample(self.contexts, min(len(self.contexts), 4 * self.config.n_random))
        randoms = [cid for cid, context_index in candidates if context_index not in own][:self.config.n_random]
        neighbours = [n[0] for n in page.feature.neighbours]
        return FeatureEvidence(
            index=index,
            top=[Window(list(v.pieces), v.acts) for v in page.top],
            sampled={i: [Window(list(v.pieces), v.acts) for v in views] for i, views in page.quantiles.items()},
            promoted=[p[1] for p in page.feature.promoted],
            random_negatives=self._windows(randoms),
            hard_negatives=self._windows(self._hard_negative_ids(neighbours, own)),
        )

    def _hard_negative_ids(self, neighbours: list[int], own: set[int]) -> list[int]:
        """Contexts of the nearest features' top examples, nearest feature first, one per context."""
        if not neighbours:
            return []
        rows = self.session.execute(
            select(Feature.feature_index, Example.context_id, Context.context_index)
            .join(Example, Example.feature_id == Feature.id).join(Context, Example.context_id == Context.id)
            .where(Feature.sae_id == self.sae_id, Feature.feature_index.in_(neighbours), Example.interval.is_(None))
            .order_by(Example.rank))
        rank = {n: r for r, n in enumerate(neighbours)}
        chosen: dict[int, None] = {}
        for _, cid, context_index in sorted(rows, key=lambda row: rank[row.feature_index]):
            if context_index not in own and len(chosen) < self.config.n_hard:
                chosen.setdefault(cid)
        return list(chosen)

    def _windows(self, context_ids: list[int]) -> list[Window]:
        if not context_ids:
            return []
        rows = self.session.execute(select(Context.id, Context.pieces).where(Context.id.in_(context_ids)))
        pieces: dict[int, list[str]] = {row.id: row.pieces for row in rows}
        return [Window(list(pieces[c]), [0.0] * len(pieces[c])) for c in context_ids]


@dataclass(frozen=True)
class Selection:
    """Which features a job covers."""

    start: int = 0
    stop: int | None = None
    """Exclusive; None: to the end."""
    unlabelled_only: bool = False


def parse_range(text: str, unlabelled_only: bool = False) -> Selection:
    """`START:STOP` (either may be left out) as a Selection; a clear error otherwise (it names `features`, as
    the CLI option --features and the SAE page's field are both called)."""
    start, sep, stop = text.partition(":")
    try:
        selection = Selection(int(start) if start else 0, int(stop) if stop else None, unlabelled_only)
    except ValueError:
        raise ValueError(f"features {text!r} is not START:STOP, e.g. 0:500") from None
    if not sep or selection.start < 0 or (selection.stop is not None and selection.stop <= selection.start):
        raise ValueError(f"features {text!r} is not START:STOP with 0 <= START < STOP, e.g. 0:500")
    return selection


def chat_model(spec: str | None, endpoint: str | None, api_key_env: str, concurrency: int = 8,
               timeout: float = 60.0) -> ChatModel:
    """An endpoint's model when an endpoint is given (nothing else touches the network), else a local LM."""
    if endpoint:
        if not spec:
            raise ValueError("--endpoint needs --explainer-model NAME (the model name the endpoint serves)")
        return EndpointChatModel(EndpointConfig(endpoint, spec, api_key_env=api_key_env, concurrency=concurrency,
                                                timeout_s=timeout))
    return LocalChatModel.load(spec or DEFAULT_MODEL)


def plan(session: Session, *, sae: Sae, selection: Selection) -> list[int]:
    """Live recorded features in the selection that have no explanation yet (unlabelled ones only if asked)."""
    stmt = select(Feature.feature_index).where(Feature.sae_id == sae.id, ~Feature.is_dead,
                                               Feature.feature_index >= selection.start)
    if selection.stop is not None:
        stmt = stmt.where(Feature.feature_index < selection.stop)
    done = explained_indices(session, sae_id=sae.id)
    if selection.unlabelled_only:
        done |= set(session.scalars(select(Label.feature_index).where(Label.sae_id == sae.id)))
    return [i for i in session.scalars(stmt.order_by(Feature.feature_index)) if i not in done]


def run_job(session: Session, *, sae: Sae, indices: Iterable[int], explainer: ChatModel, scorer: ChatModel,
            config: ExplainConfig, on_feature: Callable[[int], None] = lambda _index: None) -> int:
    """Draft, score and store each feature in turn (a feature with a human label gets that label scored too,
    so drafts and researchers' labels can be compared); returns how many were stored (a feature another job
    stored meanwhile is not stored again)."""
    reader = EvidenceReader(session, sae.id, config)
    stored = 0
    for index in indices:
        evidence = reader.evidence(index)
        drafted = explain_and_score(explainer, scorer, evidence, config)
        scores = drafted.scores
        human = crud.label_history(session, sae_id=sae.id, feature_index=index)
        if human and human[0].source == "human":
            found, fuzz = score(scorer, human[0].text, evidence, config)
            scores["label"] = {"label_id": human[0].id, **{name: s.as_dict() for name, s in
                                                            (("detection", found), ("fuzzing", fuzz)) if s}}
        if add_explanation(session, sae_id=sae.id, feature_index=index, text=drafted.text,
                           explainer_model=drafted.explainer_model, scorer_model=drafted.scorer_model,
                           prompt_version=drafted.prompt_version, scores=scores) is not None:
            stored += 1
        on_feature(index)
    return stored
