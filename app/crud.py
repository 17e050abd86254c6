"""Queries and writes on the store; every function takes the session and keyword-only arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, TypeVar

from sqlalchemy import Row, Select, bindparam, case, exists, func, null, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from .models import (
    ApiToken,
    Bookmark,
    BookmarkList,
    Context,
    Example,
    Feature,
    FeatureTag,
    Label,
    Sae,
    SteeringExperiment,
    Tag,
    TokenText,
    User,
)
from .packing import unpack_acts, unpack_ids

RowT = TypeVar("RowT")

SortKey = Literal["index", "density", "max_act", "mean_act", "label"]
StateFilter = Literal["all", "alive", "dead", "dense", "labelled", "unlabelled"]


class NotFound(LookupError):
    """A named SAE, feature, user or list that is not in the store."""


class Conflict(ValueError):
    """A write that would duplicate something unique (an SAE or user name, a list name)."""


class LabelConflict(Exception):
    """Someone else changed a feature's label since the editor loaded it; carries the label now current."""

    def __init__(self, current: Label | None):
        super().__init__("the label changed while you were editing it")
        self.current = current


# SAEs


def _add_unique(session: Session, row: RowT, conflict: str) -> RowT:
    """Insert and commit a row whose name must be unique; a duplicate is a Conflict saying `conflict`."""
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict) from None
    return row


def create_sae(session: Session, *, name: str, **fields: Any) -> Sae:
    """Register an SAE under a unique name; `fields` are Sae columns (model_name, site, d_sae, ...)."""
    return _add_unique(session, Sae(name=name, **fields), f"an SAE named {name!r} is already in the store")


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


def delete_sae(session: Session, *, sae_id: int) -> None:
    session.delete(find_sae(session, ref=sae_id))
    session.commit()


# Feature list


@dataclass(frozen=True)
class FeatureRow:
    """One line of a feature list."""

    feature_index: int
    density: float
    max_act: float
    mean_act: float
    is_dead: bool
    is_dense: bool
    label: str | None
    top_text: str


def _current_labels(sae_id: int):
    """Subquery: the newest label row of each labelled feature of one SAE."""
    newest = (
        select(func.max(Label.id).label("id"))
        .where(Label.sae_id == sae_id)
        .group_by(Label.feature_index)
        .subquery()
    )
    return select(Label.feature_index, Label.text).join(newest, Label.id == newest.c.id).subquery()


def _filtered_features(sae_id: int, state: StateFilter, tag: str | None, query: str | None, label) -> Select:
    """The feature list query before sorting and paging."""
    stmt = (
        select(Feature, label.c.text)
        .outerjoin(label, label.c.feature_index == Feature.feature_index)
        .where(Feature.sae_id == sae_id)
    )
    conditions = {
        "all": None,
        "alive": ~Feature.is_dead,
        "dead": Feature.is_dead,
        "dense": Feature.is_dense,
        "labelled": label.c.text.is_not(None),
        "unlabelled": label.c.text.is_(None),
    }
    if state not in conditions:
        raise ValueError(f"unknown filter {state!r}; choose one of {', '.join(conditions)}")
    if conditions[state] is not None:
        stmt = stmt.where(conditions[state])
    if tag:
        stmt = stmt.where(exists().where(
            FeatureTag.sae_id == sae_id, FeatureTag.feature_index == Feature.feature_index,
            FeatureTag.tag_id == Tag.id, Tag.name == tag))
    if query:
        stmt = stmt.where(or_(Feature.top_text.icontains(query, autoescape=True),
                              label.c.text.icontains(query, autoescape=True)))
    return stmt


def list_features(
    session: Session,
    *,
    sae_id: int,
    sort: SortKey = "index",
    descending: bool = False,
    state: StateFilter = "all",
    tag: str | None = None,
    query: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[FeatureRow], int]:
    """One page of an SAE's features and the total matching, sorted and filtered as a list page asks."""
    label = _current_labels(sae_id)
    stmt = _filtered_features(sae_id, state, tag, query, label)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    columns = {"index": Feature.feature_index, "density": Feature.density, "max_act": Feature.max_act,
               "mean_act": Feature.mean_act, "label": label.c.text}
    if sort not in columns:
        raise ValueError(f"unknown sort {sort!r}; choose one of {', '.join(columns)}")
    key = columns[sort].desc() if descending else columns[sort].asc()
    order = [key, Feature.feature_index]
    if sort == "label":  # unlabelled features last either way
        order.insert(0, case((label.c.text.is_(None), 1), else_=0))
    rows = session.execute(stmt.order_by(*order).limit(limit).offset(offset))
    return [_row(feature, text) for feature, text in rows], total or 0


def _row(feature: Feature, label: str | None) -> FeatureRow:
    return FeatureRow(feature.feature_index, feature.density, feature.max_act, feature.mean_act,
                      feature.is_dead, feature.is_dense, label, feature.top_text)


# Feature page


@dataclass(frozen=True)
class ExampleView:
    """An example window ready to render: token pieces with this feature's activation on each."""

    token_ids: list[int]
    pieces: list[str]
    acts: list[float]
    peak: int
    value: float
    interval: int | None
    context_index: int
    start: int


@dataclass(frozen=True)
class SaeHeader:
    """What a feature page shows of its SAE (the rest waits for the SAE's own page, or find_sae)."""

    id: int
    name: str
    d_sae: int
    record_config: dict[str, Any] | None
    recorded_at: datetime | None


@dataclass(frozen=True)
class FeaturePage:
    """Everything a feature page shows."""

    sae: SaeHeader
    feature: Row[Any]
    """The feature's row of the features table, which reads like a Feature."""
    examples: list[Row[Any]]
    """(token_ids, pieces, acts, peak, value, interval, context_index, start) as stored: top examples by rank,
    then the quantile samples by interval and rank. Packed, because the HTML page renders them straight
    from the float16 bytes; `top` and `quantiles` unpack them for the API and the exports."""
    labels: list[Row[Any]]
    """Label history, newest first: (id, feature_index, text, source, created_at, author_name) rows, which read
    like Label objects."""
    tags: list[str]
    neighbour_labels: dict[int, str]
    """The current label of each labelled nearest feature, for the links to them."""

    @property
    def label(self) -> str | None:
        return self.labels[0].text if self.labels else None

    @cached_property
    def top(self) -> list[ExampleView]:
        return [_view(row) for row in self.examples if row.interval is None]

    @cached_property
    def quantiles(self) -> dict[int, list[ExampleView]]:
        groups: dict[int, list[ExampleView]] = {}
        for row in self.examples:
            if row.interval is not None:
                groups.setdefault(row.interval, []).append(_view(row))
        return groups


def _view(row: Row[Any]) -> ExampleView:
    ids, pieces, acts, *rest = row
    return ExampleView(unpack_ids(ids), list(pieces), unpack_acts(acts), *rest)


# Built once: constructing a statement costs about as much as running it on SQLite. A page runs three: the
# feature with its SAE, its examples, and the labels of it and its neighbours; the tags only when it has some.
# Each is a round trip on PostgreSQL, which is most of a page's time there. All three read plain rows through
# the Core connection: through the ORM, with a Feature and a Sae entity, the first took twice the CPU on
# SQLite (0.145 against 0.071 ms here) and a third more on PostgreSQL.
_FEATURE_AND_SAE = (
    select(Feature.__table__, Sae.name.label("sae_name"), Sae.d_sae.label("sae_d_sae"),
           Sae.record_config.label("sae_record_config"), Sae.recorded_at.label("sae_recorded_at"),
           exists().where(FeatureTag.sae_id == Feature.sae_id,
                          FeatureTag.feature_index == Feature.feature_index).label("tagged"))
    .join(Sae, Feature.sae_id == Sae.id)
    .where(Feature.sae_id == bindparam("sae_id"), Feature.feature_index == bindparam("index"))
)


def _examples(pieces: Any) -> Select[Any]:
    return (
        select(Context.token_ids, pieces.label("pieces"), Example.acts, Example.peak, Example.value,
               Example.interval, Context.context_index, Context.start)
        .join(Context, Example.context_id == Context.id)
        .where(Example.feature_id == bindparam("feature_id"))
        .order_by(Example.interval.is_not(None), Example.interval, Example.rank)
    )


_EXAMPLES = _examples(Context.pieces)
_EXAMPLES_WITHOUT_PIECES = _examples(null())
"""For the HTML page, which takes the pieces from the SAE's token texts (app/vocab.py)."""

_LABELS_OF = (
    select(Label.id, Label.feature_index, Label.text, Label.source, Label.created_at, User.name.label("author_name"))
    .outerjoin(User, Label.author_id == User.id)
    .where(Label.sae_id == bindparam("sae_id"), Label.feature_index.in_(bindparam("indices", expanding=True)))
    .order_by(Label.id.desc())
)
"""Plain rows that read like Label objects (author_name included): the ORM cost more than the query."""


def feature_page(session: Session, *, sae_id: int, feature_index: int, with_pieces: bool = True) -> FeaturePage:
    """The data of one feature page; without pieces, the examples' are None."""
    connection = session.connection()
    feature = connection.execute(_FEATURE_AND_SAE, {"sae_id": sae_id, "index": feature_index}).one_or_none()
    if feature is None:
        raise _no_feature(session, sae_id, feature_index)
    sae = SaeHeader(sae_id, feature.sae_name, feature.sae_d_sae, feature.sae_record_config, feature.sae_recorded_at)
    statement = _EXAMPLES if with_pieces else _EXAMPLES_WITHOUT_PIECES
    examples = connection.execute(statement, {"feature_id": feature.id}).all()
    neighbours = [n[0] for n in feature.neighbours]
    labels = connection.execute(_LABELS_OF, {"sae_id": sae_id, "indices": [feature_index, *neighbours]}).all()
    history = [label for label in labels if label.feature_index == feature_index]
    current: dict[int, str] = {}
    for label in labels:  # newest first: the first seen of each feature is its current label
        current.setdefault(label.feature_index, label.text)
    tags = feature_tags(session, sae_id=sae_id, feature_index=feature_index) if feature.tagged else []
    return FeaturePage(sae, feature, examples, history, tags,
                       {index: current[index] for index in neighbours if index in current})


def find_feature(session: Session, *, sae_id: int, feature_index: int) -> Feature:
    """A recorded feature alone, for routes that check it exists or run the model on it (not the whole page)."""
    feature = session.scalar(select(Feature).where(Feature.sae_id == sae_id, Feature.feature_index == feature_index))
    if feature is None:
        raise _no_feature(session, sae_id, feature_index)
    return feature


def _no_feature(session: Session, sae_id: int, feature_index: int) -> NotFound:
    sae = find_sae(session, ref=sae_id)  # NotFound itself for an unknown SAE
    return NotFound(f"SAE {sae.name!r} has no recorded feature {feature_index} (it has {sae.d_sae})")


def token_texts(session: Session, *, sae_id: int) -> dict[int, str]:
    """The text of every token id the SAE's recording shows."""
    rows = session.connection().execute(select(TokenText.token_id, TokenText.text).where(TokenText.sae_id == sae_id))
    return {token_id: text for token_id, text in rows}


# Labels


def add_label(session: Session, *, sae_id: int, feature_index: int, text: str,
              author_id: int | None = None, source: str = "human") -> Label:
    """Append a new current label; earlier ones stay in the history."""
    text = text.strip()
    if not text:
        raise ValueError("a label cannot be empty")
    label = Label(sae_id=sae_id, feature_index=feature_index, text=text, author_id=author_id, source=source)
    session.add(label)
    session.commit()
    return label


def revise_label(session: Session, *, sae_id: int, feature_index: int, text: str, base_id: int | None,
                 author_id: int | None = None) -> Label:
    """Append a label only if the current one is still `base_id` (None: unlabelled), else LabelConflict.

    The feature row is locked first (FOR UPDATE on PostgreSQL; SQLite takes its single write lock at the
    insert), and the check runs after the insert inside the same transaction, so of two concurrent edits
    from the same base exactly one wins.
    """
    text = text.strip()
    if not text:
        raise ValueError("a label cannot be empty")
    locked = session.scalar(select(Feature.id).where(Feature.sae_id == sae_id, Feature.feature_index == feature_index)
                            .with_for_update())
    if locked is None:
        raise NotFound(f"SAE {sae_id} has no recorded feature {feature_index}")
    label = Label(sae_id=sae_id, feature_index=feature_index, text=text, author_id=author_id, source="human")
    session.add(label)
    session.flush()
    previous = session.scalar(select(Label).where(Label.sae_id == sae_id, Label.feature_index == feature_index,
                                                  Label.id < label.id).order_by(Label.id.desc()).limit(1))
    if (previous.id if previous else None) != base_id:
        session.rollback()
        history = label_history(session, sae_id=sae_id, feature_index=feature_index)
        raise LabelConflict(history[0] if history else None)
    session.commit()
    return label


_LABEL_HISTORY = (
    select(Label).options(joinedload(Label.author))
    .where(Label.sae_id == bindparam("sae_id"), Label.feature_index == bindparam("index")).order_by(Label.id.desc())
)


def label_history(session: Session, *, sae_id: int, feature_index: int) -> list[Label]:
    """Every label a feature has had, newest first."""
    return list(session.scalars(_LABEL_HISTORY, {"sae_id": sae_id, "index": feature_index}))


def current_labels(session: Session, *, sae_id: int) -> dict[int, Label]:
    """The current label of every labelled feature of an SAE."""
    newest = select(func.max(Label.id)).where(Label.sae_id == sae_id).group_by(Label.feature_index)
    return {label.feature_index: label for label in session.scalars(select(Label).where(Label.id.in_(newest)))}


_LABEL_TEXTS = select(Label.feature_index, Label.text).where(Label.id.in_(
    select(func.max(Label.id))
    .where(Label.sae_id == bindparam("sae_id"), Label.feature_index.in_(bindparam("indices", expanding=True)))
    .group_by(Label.feature_index)
))


def label_texts(session: Session, *, sae_id: int, indices: list[int]) -> dict[int, str]:
    """The current label text of those of `indices` that are labelled (for links to neighbours)."""
    rows = session.connection().execute(_LABEL_TEXTS, {"sae_id": sae_id, "indices": indices})
    return {index: text for index, text in rows}


def labelled_count(session: Session, *, sae_id: int) -> int:
    """How many features of an SAE have a label."""
    return session.scalar(select(func.count(func.distinct(Label.feature_index))).where(Label.sae_id == sae_id)) or 0


def next_unlabelled(session: Session, *, sae_id: int, after: int = -1) -> int | None:
    """The first live unlabelled feature after index `after`, wrapping round; None when all are labelled."""
    labelled = exists().where(Label.sae_id == sae_id, Label.feature_index == Feature.feature_index)
    base = select(Feature.feature_index).where(Feature.sae_id == sae_id, ~Feature.is_dead, ~labelled)
    found = session.scalar(base.where(Feature.feature_index > after).order_by(Feature.feature_index).limit(1))
    if found is None:
        found = session.scalar(base.order_by(Feature.feature_index).limit(1))
    return found


def import_labels(session: Session, *, sae_id: int, labels: list[tuple[int, str]], author_id: int | None) -> int:
    """Append imported (index, text) labels that differ from the current ones; returns how many were added."""
    sae = find_sae(session, ref=sae_id)
    outside = [i for i, _ in labels if not 0 <= i < sae.d_sae]
    if outside:
        raise ValueError(f"feature {outside[0]} is outside SAE {sae.name!r} (0..{sae.d_sae - 1})")
    current = {i: label.text for i, label in current_labels(session, sae_id=sae_id).items()}
    added = 0
    for index, text in labels:
        if current.get(index) != text:
            session.add(Label(sae_id=sae_id, feature_index=index, text=text, author_id=author_id, source="import"))
            current[index] = text
            added += 1
    session.commit()
    return added


def all_labels(session: Session, *, sae_id: int) -> list[Label]:
    """The whole label history of an SAE, oldest first, authors loaded."""
    return list(session.scalars(select(Label).options(joinedload(Label.author)).where(Label.sae_id == sae_id)
                                .order_by(Label.feature_index, Label.id)))


# Tags


def tag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str, author_id: int | None = None) -> None:
    """Put a tag (created on first use) on a feature; tagging twice is a no-op."""
    name = tag.strip()
    if not name:
        raise ValueError("a tag cannot be empty")
    row = session.scalar(select(Tag).where(Tag.name == name)) or Tag(name=name)
    session.add(row)
    session.flush()
    if session.get(FeatureTag, (sae_id, feature_index, row.id)) is None:
        session.add(FeatureTag(sae_id=sae_id, feature_index=feature_index, tag_id=row.id, author_id=author_id))
    session.commit()


def untag_feature(session: Session, *, sae_id: int, feature_index: int, tag: str) -> None:
    link = session.scalar(select(FeatureTag).join(Tag).where(
        FeatureTag.sae_id == sae_id, FeatureTag.feature_index == feature_index, Tag.name == tag))
    if link is not None:
        session.delete(link)
        session.commit()


_FEATURE_TAGS = select(Tag.name).join(FeatureTag).where(
    FeatureTag.sae_id == bindparam("sae_id"), FeatureTag.feature_index == bindparam("index")).order_by(Tag.name)


def feature_tags(session: Session, *, sae_id: int, feature_index: int) -> list[str]:
    return list(session.connection().execute(_FEATURE_TAGS, {"sae_id": sae_id, "index": feature_index}).scalars())


def list_tags(session: Session) -> list[str]:
    return list(session.scalars(select(Tag.name).order_by(Tag.name)))


# Users and API tokens


def create_user(session: Session, *, name: str, password_hash: str, role: str = "viewer") -> User:
    return _add_unique(session, User(name=name, password_hash=password_hash, role=role),
                       f"a user named {name!r} already exists")


def find_user(session: Session, *, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def add_api_token(session: Session, *, user_id: int, name: str, token_hash: str) -> ApiToken:
    token = ApiToken(user_id=user_id, name=name, token_hash=token_hash)
    session.add(token)
    session.commit()
    return token


def user_for_token(session: Session, *, token_hash: str) -> User | None:
    return session.scalar(select(User).join(ApiToken).where(ApiToken.token_hash == token_hash))


# Bookmarks


def create_bookmark_list(session: Session, *, owner_id: int, name: str, description: str = "") -> BookmarkList:
    return _add_unique(session, BookmarkList(owner_id=owner_id, name=name, description=description),
                       f"you already have a list named {name!r}")


def find_bookmark_list(session: Session, *, list_id: int, owner_id: int) -> BookmarkList:
    """One of the owner's lists; another user's list is as missing as a list that does not exist."""
    lst = session.get(BookmarkList, list_id)
    if lst is None or lst.owner_id != owner_id:
        raise NotFound(f"you have no bookmark list {list_id}")
    return lst


def add_bookmark(session: Session, *, list_id: int, sae_id: int, feature_index: int, note: str = "") -> None:
    """Bookmark a feature in a list; bookmarking again updates the note."""
    mark = session.get(Bookmark, (list_id, sae_id, feature_index))
    if mark is None:
        session.add(Bookmark(list_id=list_id, sae_id=sae_id, feature_index=feature_index, note=note))
    else:
        mark.note = note
    session.commit()


def remove_bookmark(session: Session, *, list_id: int, sae_id: int, feature_index: int) -> None:
    mark = session.get(Bookmark, (list_id, sae_id, feature_index))
    if mark is not None:
        session.delete(mark)
        session.commit()


def bookmark_lists(session: Session, *, owner_id: int) -> list[BookmarkList]:
    return list(session.scalars(select(BookmarkList).where(BookmarkList.owner_id == owner_id).order_by(BookmarkList.name)))


# Steering experiments


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
