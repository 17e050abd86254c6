"""The store's tables (SQLAlchemy 2 typed ORM). Created and changed only through Alembic migrations.

Recorded data (features, contexts, examples) belongs to one recording of one SAE and is replaced whole
when the SAE is recorded again. What people add (labels, tags, bookmarks) is keyed by (sae_id,
feature_index) instead of a feature row id, so it survives re-recording.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .security import WRITERS

# Named constraints let Alembic's batch mode rebuild SQLite tables and drop constraints by name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now() -> datetime:
    """Timestamps are stored in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp, comparable with now(): SQLite gives them back without their (UTC) zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    """A person who reads and, as a labeller or admin, labels, tags, bookmarks and steers (security.ROLES)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=now)
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")
    sessions: Mapped[list[UserSession]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def can_write(self) -> bool:
        """Whether the account may write: labels, tags, imports, bookmarks and steering runs."""
        return self.role in WRITERS

    @property
    def is_admin(self) -> bool:
        """Whether the account may run the server's long jobs (explaining an SAE's features from its page)."""
        return self.role == "admin"


class ApiToken(Base):
    """A bearer token for the API; only its hash is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_used_at: Mapped[datetime | None]
    """Written at most once a minute (crud.accounts.LAST_USED_STEP), so a busy script costs no write per call."""
    expires_at: Mapped[datetime | None]
    """None: the token lasts until revoked."""
    revoked_at: Mapped[datetime | None]
    """Kept rather than deleting the row, so a revoked token is refused as revoked and still listed."""
    user: Mapped[User] = relationship(back_populates="tokens")

    def state(self, moment: datetime) -> str:
        """"revoked", "expired" or "active" at `moment`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and as_utc(self.expires_at) <= moment:
            return "expired"
        return "active"


class UserSession(Base):
    """One signed-in browser: the session cookie names it by a random token, of which only the hash is stored.

    Deleting the row ends that login wherever the cookie was copied to; logout deletes its own row, a
    password or role change deletes all of the user's rows.
    """

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    user: Mapped[User] = relationship(back_populates="sessions")


class LoginFailures(Base):
    """Recent failed logins under one key (an account name or a client address), shared by every worker."""

    __tablename__ = "login_failures"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    """`account:NAME` or `client:ADDRESS` (security.Throttle.key)."""
    failures: Mapped[int]
    last_failed_at: Mapped[datetime]
    blocked_until: Mapped[datetime]
    """Logins under this key are refused (429) until then."""


class Sae(Base):
    """One SAE (a model, a site, a dictionary) and the summary of its latest recording."""

    __tablename__ = "saes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_spec: Mapped[str] = mapped_column(String(500), default="")
    site: Mapped[str] = mapped_column(String(64))
    hook_name: Mapped[str] = mapped_column(String(64), default="")
    architecture: Mapped[str] = mapped_column(String(32))
    d_in: Mapped[int]
    d_sae: Mapped[int]
    k: Mapped[int | None]
    source_path: Mapped[str] = mapped_column(String(1000), default="")
    source_format: Mapped[str] = mapped_column(String(32), default="")
    """The layout the SAE was read from (app/pipeline.read_sae names it); empty, as source_path, for an SAE
    registered without files."""
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    eval_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_log: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=now)
    recorded_at: Mapped[datetime | None]
    dataset: Mapped[str | None] = mapped_column(String(200))
    n_tokens: Mapped[int | None] = mapped_column(BigInteger)
    n_contexts: Mapped[int | None]
    record_config: Mapped[dict[str, Any] | None]
    density_histogram: Mapped[dict[str, Any] | None]
    """{"log10_edges": [...], "counts": [...]} over features that fire."""
    dead_count: Mapped[int | None]
    dense_count: Mapped[int | None]
    mean_l0: Mapped[float | None] = mapped_column(Float)
    set_id: Mapped[int | None] = mapped_column(ForeignKey("sae_sets.id", ondelete="SET NULL"), index=True)
    """The set (SaeSet, issue 15) of SAEs at several sites of one model this SAE belongs to, if any."""


class Feature(Base):
    """One feature's recorded summary; the columns a list page sorts and filters on are indexed."""

    __tablename__ = "features"
    __table_args__ = (
        UniqueConstraint("sae_id", "feature_index"),
        # The list pages by key (crud.features.list_features): each sort column with the feature index after it.
        Index("ix_features_sae_density_index", "sae_id", "density", "feature_index"),
        Index("ix_features_sae_max_act_index", "sae_id", "max_act", "feature_index"),
        Index("ix_features_sae_mean_act_index", "sae_id", "mean_act", "feature_index"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    feature_index: Mapped[int]
    density: Mapped[float] = mapped_column(Float)
    fire_count: Mapped[int] = mapped_column(BigInteger)
    max_act: Mapped[float] = mapped_column(Float)
    mean_act: Mapped[float] = mapped_column(Float)
    """Mean over the tokens where the feature fires."""
    is_dead: Mapped[bool] = mapped_column(Boolean)
    is_dense: Mapped[bool] = mapped_column(Boolean)
    hist: Mapped[dict[str, Any]]
    """{"edges": [...], "counts": [...]} of non-zero activations, log-spaced bins."""
    promoted: Mapped[list[Any]]
    """[[token_id, text, logit], ...] most promoted first."""
    suppressed: Mapped[list[Any]]
    """[[token_id, text, logit], ...] most suppressed first."""
    neighbours: Mapped[list[Any]]
    """[[feature_index, cosine], ...] nearest first."""
    top_text: Mapped[str] = mapped_column(Text, default="")
    """Peak tokens of the top examples and promoted tokens, space-joined, for text search."""
    examples: Mapped[list[Example]] = relationship(
        back_populates="feature", cascade="all, delete-orphan", passive_deletes=True, order_by="Example.id"
    )


class Context(Base):
    """A window of tokens shown for one or more examples, stored once: int32 ids and their text pieces."""

    __tablename__ = "contexts"
    __table_args__ = (UniqueConstraint("sae_id", "context_index", "start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    context_index: Mapped[int]
    """Number of the context in the recording stream."""
    start: Mapped[int]
    """Position of the window's first token in the context."""
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)
    pieces: Mapped[list[Any]]


class TokenText(Base):
    """The text of one token id on its own, as recorded for an SAE's model: the pieces of every window are
    these, so a feature page reads them from a per-SAE table it loads once instead of a list per window."""

    __tablename__ = "token_texts"
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    token_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)


class Example(Base):
    """One window for one feature: which token it was chosen for and the feature's float16 activations."""

    __tablename__ = "examples"
    id: Mapped[int] = mapped_column(primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), index=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), index=True)
    interval: Mapped[int | None] = mapped_column(SmallInteger)
    """Quantile interval of a sampled example; NULL for a top example."""
    rank: Mapped[int] = mapped_column(SmallInteger)
    peak: Mapped[int] = mapped_column(SmallInteger)
    value: Mapped[float] = mapped_column(Float)
    acts: Mapped[bytes] = mapped_column(LargeBinary)
    feature: Mapped[Feature] = relationship(back_populates="examples")
    context: Mapped[Context] = relationship(lazy="joined")


STATEMENT_CHECKED_KEYS = frozenset({"fk_examples_feature_id_features", "fk_examples_context_id_contexts"})
"""Example's foreign keys that PostgreSQL enforces by statement-level triggers, not constraints (migration 0014):
a constraint checks each of a bulk import's millions of rows with a query of its own."""


class Label(Base):
    """One version of a feature's label; the history is append-only and the newest is current."""

    __tablename__ = "labels"
    __table_args__ = (
        Index("ix_labels_feature", "sae_id", "feature_index", "id"),
        # The label sort pages by key through this (crud.features.label_sort_key writes the same expression).
        Index("ix_labels_sort", "sae_id", sql_text("substr(text, 1, 200)"), "feature_index"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    feature_index: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="human")
    """human, auto (generated) or import."""
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=now)
    author: Mapped[User | None] = relationship()

    @property
    def author_name(self) -> str | None:
        """The author's login name; None for imported labels or a deleted account. Label rows read from
        the store without the ORM (crud.FeaturePage.labels) carry a column of the same name."""
        return self.author.name if self.author else None


class Tag(Base):
    """A named tag that features can carry."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class FeatureTag(Base):
    """A tag on a feature."""

    __tablename__ = "feature_tags"
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    feature_index: Mapped[int] = mapped_column(primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=now)
    tag: Mapped[Tag] = relationship(lazy="joined")


class BookmarkList(Base):
    """A user's named list of features."""

    __tablename__ = "bookmark_lists"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=now)
    bookmarks: Mapped[list[Bookmark]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Bookmark(Base):
    """A feature in a bookmark list, with an optional note."""

    __tablename__ = "bookmarks"
    list_id: Mapped[int] = mapped_column(ForeignKey("bookmark_lists.id", ondelete="CASCADE"), primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    feature_index: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=now)


class SteeringExperiment(Base):
    """A saved steering run: prompt, interventions on features, generation settings and outputs."""

    __tablename__ = "steering_experiments"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prompt: Mapped[str] = mapped_column(Text)
    interventions: Mapped[list[Any]]
    """[{"feature": i, "mode": "clamp", "value": v}, ...] (app/steer_schemas.InterventionIn)."""
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Generation settings (max_new_tokens, temperature, top_p, seed, positions, raw, strengths, target)
    and "rows": every row's output and measured effect, a sweep's included (app/steer_schemas.RowOut)."""
    baseline_text: Mapped[str | None] = mapped_column(Text)
    steered_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now)


# --- issue 15: dictionaries at several sites of one model -----------------------------------------------------


class SaeSet(Base):
    """SAEs of one model at several sites, read together: attribution splices every member into one forward.

    Members are the SAE rows whose set_id names the set (crud.set_members lists them in forward order): at
    most one per site, all of the set's model (crud.sae_sets checks both when an SAE joins).
    """

    __tablename__ = "sae_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model_name: Mapped[str] = mapped_column(String(200))
    """The model every member reads (Sae.model_name)."""
    created_at: Mapped[datetime] = mapped_column(default=now)


# Issue 18: raw steering directions, the mean difference of two prompt sets' activations at an SAE's site.
class SteeringDirection(Base):
    """A named direction in an SAE's activation space, steerable like a feature (app/steer_schemas.InterventionIn)."""

    __tablename__ = "steering_directions"
    __table_args__ = (UniqueConstraint("sae_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    vector: Mapped[list[Any]]
    """The direction's d_in floats: mean site activation of set A minus that of set B (sae_core.contrast)."""
    norm: Mapped[float] = mapped_column(Float)
    texts: Mapped[dict[str, Any]]
    """{"a": [...], "b": [...]}: the prompt sets it was made from."""
    created_at: Mapped[datetime] = mapped_column(default=now)


# --- issue 15: attribution graphs ---------------------------------------------------------------------------


class AttributionGraphRow(Base):
    """A saved attribution graph (sae_core.attribution.AttributionGraph as JSON), kept for its permalink."""

    __tablename__ = "attribution_graphs"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sae_sets.id", ondelete="CASCADE"), index=True)
    """The set of SAEs the graph was drawn on."""
    sae_ids: Mapped[list[Any]]
    """The store ids of the SAEs spliced in, one per site in depth order."""
    prompt: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(16))
    graph: Mapped[dict[str, Any]]
    """AttributionGraph.to_dict() (nodes, links, shares, verification), or for method "replacement" a
    transcoder set's ReplacementGraph.to_dict() with its prompt's tokens and the run's settings."""
    adjacency: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    """A replacement graph's whole adjacency (ReplacementGraph.adjacency_bytes), which the page prunes again at
    any thresholds without running the model; loaded only when asked for."""
    created_at: Mapped[datetime] = mapped_column(default=now)


# Issue 16: the feature map (positions and clusters of an SAE's features), cluster labels, co-activation.


class FeatureMapRun(Base):
    """The current map of an SAE: how it was made; replaced whole, with its points and clusters, when remade."""

    __tablename__ = "feature_maps"
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    config: Mapped[dict[str, Any]]
    """sae_core.maps.MapConfig as a dict."""
    membership: Mapped[str] = mapped_column(String(16))
    """A hash of which features each cluster holds: cluster labels written under another map are not shown
    on this one (their cluster numbers name other groups), and come back when a map with these clusters does."""
    n_clusters: Mapped[int]
    n_noise: Mapped[int]
    n_dead: Mapped[int]
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=now)


class MapPoint(Base):
    """A feature's place on its SAE's map: position (NULL for a dead feature) and cluster (NULL for none)."""

    __tablename__ = "map_points"
    __table_args__ = (Index("ix_map_points_sae_cluster", "sae_id", "cluster"),)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    feature_index: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    x: Mapped[float | None] = mapped_column(Float)
    y: Mapped[float | None] = mapped_column(Float)
    cluster: Mapped[int | None]


class MapCluster(Base):
    """One cluster of an SAE's map: its size, centre and the members' most common top tokens."""

    __tablename__ = "map_clusters"
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    cluster: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int]
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    top_tokens: Mapped[list[Any]]
    """[[text, members], ...] most common first."""


class ClusterLabel(Base):
    """One version of a cluster's label, append-only like feature labels, under the map membership it names."""

    __tablename__ = "cluster_labels"
    __table_args__ = (Index("ix_cluster_labels_cluster", "sae_id", "membership", "cluster", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    membership: Mapped[str] = mapped_column(String(16))
    cluster: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=now)
    author: Mapped[User | None] = relationship()


class Coactivation(Base):
    """The features that fire together with one feature over its SAE's recording (part of the recording)."""

    __tablename__ = "coactivations"
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"), primary_key=True)
    feature_index: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    partners: Mapped[list[Any]]
    """[[feature_index, jaccard], ...] highest Jaccard first (features that fire with no other have no row)."""
# Issue 17: draft explanations. A draft stays here, beside the labels, until a researcher acts on it: accepting
# appends a label with source "auto" whose author is the verifier, editing appends a human label, and either
# way label_id names that label so its history shows the draft it started from. Labels are never written over.


class Explanation(Base):
    """A draft label written by an explainer model, with its scores and what produced them."""

    __tablename__ = "explanations"
    __table_args__ = (Index("ix_explanations_feature", "sae_id", "feature_index", unique=True),
                      # the score sort pages by key: the score with the feature index after it
                      Index("ix_explanations_sae_score", "sae_id", "score", "feature_index"))
    id: Mapped[int] = mapped_column(primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    feature_index: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    explainer_model: Mapped[str] = mapped_column(String(200))
    scorer_model: Mapped[str] = mapped_column(String(200))
    prompt_version: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    """Detection balanced accuracy (what lists sort by); None when the feature had too little to score on."""
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """{"detection": {...}, "fuzzing": {...}}, each sae_core.explain.Score.as_dict()."""
    status: Mapped[str] = mapped_column(String(16), default="draft")
    """draft (unverified), accepted, edited or rejected."""
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id", ondelete="SET NULL"), index=True)
    """The label accepting or editing the draft made."""
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=now)
    reviewer: Mapped[User | None] = relationship()

    @property
    def reviewer_name(self) -> str | None:
        return self.reviewer.name if self.reviewer else None
