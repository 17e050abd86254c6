"""Features of an SAE: the sorted, filtered list and the whole of one feature's page, read in three statements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from itertools import islice
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause

from ..models import Context, Example, Explanation, Feature, FeatureTag, Label, Sae, Tag, TokenText
from ..packing import unpack_acts, unpack_ids
from .base import NotFound, shared_alias
from .briefs import FeatureBrief, feature_briefs
from .explanations import DRAFT, current_draft, draft_count
from .labels import current_label, label_rows, labelled_count
from .saes import find_sae
from .tags import feature_tags, named, tagged_count
from .text_search import MIN_CHARS, Matcher, candidate_cap, candidates, matcher

SortKey = Literal["index", "density", "max_act", "mean_act", "label", "score"]
StateFilter = Literal["all", "alive", "dead", "dense", "labelled", "unlabelled", "draft", "verified", "human"]
LABEL_SOURCES = {"verified": ("auto",), "human": ("human", "import")}
"""The filters on where a feature's current label came from: a verified draft, or a person (typed or imported)."""


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
    draft: str | None = None
    """The feature's unverified draft explanation, when it has one."""
    score: float | None = None
    """Detection score of the feature's newest explanation (listed when filtering or sorting by drafts)."""


@dataclass(frozen=True)
class Filters:
    """What a list page's features must satisfy, and what the page reads first to find them."""

    state: StateFilter = "all"
    tag: str | None = None
    match: Matcher | None = None
    """What one of a feature's texts (top text, current label, draft) must satisfy, for a text search."""
    within: list[int] | None = None
    """The only features that may match the search, where the text index named few enough to look each up."""
    span: tuple[int, int] | None = None
    """The only stretch of feature indices (first, last) the page reads: a search's walk of a stretch."""
    bound_joins: bool = False
    """Put `within` and `span` on the joined tables (labels, drafts) too, for PostgreSQL (`_among`)."""
    lead_state: bool = False
    """The state filter's rows (labels or drafts) are few: the page reads them first, not the features."""
    lead_tag: bool = False
    """The tag's rows are few: the page reads them first."""


LABEL, DRAFTED = shared_alias(Label, "label"), shared_alias(Explanation, "drafted")
"""A listed feature's current label and its explanation, joined to it."""
LABEL_TEST, DRAFT_TEST = shared_alias(Label, "label_test"), shared_alias(Explanation, "draft_test")
"""The same, in a state filter's test of each feature walked (`_walked`)."""

LEADING_STATES = ("labelled", "verified", "human", "draft")
"""The filters whose rows (labels or drafts) a page can read first, in place of walking the features."""


def _filtered_features(sae_id: int, filters: Filters, label: NamedFromClause, drafted: NamedFromClause | None = None,
                       required: NamedFromClause | None = None) -> Select:
    """The feature list query before sorting and paging, with each feature's current `label` (an alias of
    labels) and, given `drafted` (an alias of explanations, one per feature since 0010), its explanation, for
    the draft filter, the score sort and the search of draft text.

    Both are joined on the feature's key through their indexes, so a page costs a few lookups per row it reads:
    the grouped subquery of newest labels this replaces read every label of the SAE per page. A table is joined
    inner where it leads (the `required` one, or the state filter's with `filters.lead_state`), which lets the
    planner read it first, in its own index's order. Otherwise it is joined left and a filter on it is a test of
    each feature walked, through lookups of its own (`_walked`), so that the page walks the features in key order
    and stops at its end: SQLite turns a left join whose row the WHERE clause requires (status = 'draft') into an
    inner one, which it may read first. A tag leads, or is walked, the same way (`_tagged`)."""
    state = filters.state
    leads = {required}
    if filters.lead_state:
        leads.add(drafted if state == "draft" else label)
    stmt = (
        select(*LISTED[:6], label.c.text, Feature.top_text)
        .join_from(Feature, label, and_(current_label(label, sae_id, Feature.feature_index),
                                        *_joined_among(filters, label.c.feature_index)), isouter=label not in leads)
        .where(Feature.sae_id == sae_id, *_among(filters, Feature.feature_index))
    )
    if drafted is not None:
        stmt = (stmt.add_columns(drafted.c.text.label("draft"), drafted.c.status, drafted.c.score)
                .join_from(Feature, drafted, and_(_explanation_of(drafted, sae_id),
                                                  *_joined_among(filters, drafted.c.feature_index)),
                           isouter=drafted not in leads))
    if state not in STATES:
        raise ValueError(f"unknown filter {state!r}; choose one of {', '.join(STATES)}")
    if state in LEADING_STATES and not filters.lead_state:
        stmt = stmt.where(_walked(sae_id, state))
    elif (condition := _state_condition(state, label, drafted)) is not None:
        stmt = stmt.where(condition)
    if filters.tag:
        stmt = stmt.where(_tagged(sae_id, filters.tag, filters.lead_tag))
    if filters.match is not None:
        found = [filters.match(Feature.top_text), filters.match(label.c.text)]
        if drafted is not None:
            found.append(and_(drafted.c.status == DRAFT, filters.match(drafted.c.text)))
        stmt = stmt.where(or_(*found))
    return stmt


def _among(filters: Filters, feature_index: SQLColumnExpression[int]) -> list[ColumnElement[bool]]:
    """The features a search's page may read (its candidates, or its stretch), on a table's feature index."""
    among: list[ColumnElement[bool]] = [feature_index.in_(filters.within)] if filters.within is not None else []
    return among + ([feature_index.between(*filters.span)] if filters.span is not None else [])


def _joined_among(filters: Filters, feature_index: SQLColumnExpression[int]) -> list[ColumnElement[bool]]:
    """`_among` on a joined table, where the database's planner needs it (`Filters.bound_joins`).

    Without it PostgreSQL, estimating a thousand features and no bound on their labels and drafts, hashed every
    label and draft of the SAE for each page: 40 ms for a stretch of a thousand features at a million, 3 ms with.
    SQLite's planner, given the bound in a join's condition, reads it as a range over the joined table's index
    in place of the join's one-row lookup: a range scan for every feature walked."""
    return _among(filters, feature_index) if filters.bound_joins else []


STATES: tuple[StateFilter, ...] = get_args(StateFilter)


def _state_condition(state: StateFilter, label: NamedFromClause, drafted: NamedFromClause | None
                     ) -> SQLColumnExpression[bool] | None:
    """The state filter on a feature's row with its current `label` and its explanation `drafted` joined."""
    conditions: dict[str, SQLColumnExpression[bool] | None] = {
        "alive": ~Feature.is_dead,
        "dead": Feature.is_dead,
        "dense": Feature.is_dense,
        "labelled": _labelled(label),
        "unlabelled": ~_labelled(label),
        "draft": drafted.c.status == DRAFT if drafted is not None else None,
        **{name: label.c.source.in_(sources) for name, sources in LABEL_SOURCES.items()},
    }
    return conditions.get(state)


def _walked(sae_id: int, state: StateFilter) -> ColumnElement[bool]:
    """A label or draft filter as a test of each feature (EXISTS over its own aliases): the feature has a current
    label (from one of the state's sources) or a draft."""
    label, drafted = LABEL_TEST, DRAFT_TEST
    join = _explanation_of(drafted, sae_id) if state == "draft" else current_label(label, sae_id, Feature.feature_index)
    condition = _state_condition(state, label, drafted)
    assert condition is not None  # every state a page can walk has one
    return exists().where(join, condition)


def _explanation_of(drafted: NamedFromClause, sae_id: int) -> ColumnElement[bool]:
    """Join condition: `drafted` (an alias of explanations) is the feature's explanation (one per feature)."""
    return and_(drafted.c.sae_id == sae_id, drafted.c.feature_index == Feature.feature_index)


def _tagged(sae_id: int, tag: str, lead: bool) -> ColumnElement[bool]:
    """The feature carries the tag: as a list of its features (for the planner to read first) or as a test of each
    feature (for a walk)."""
    rows = select(FeatureTag.feature_index).join(Tag).where(FeatureTag.sae_id == sae_id, named(tag))
    if lead:
        return Feature.feature_index.in_(rows)
    return rows.where(FeatureTag.feature_index == Feature.feature_index).exists()


KEYSET_SORTS = ("index", "density", "max_act", "mean_act", "label", "score")
"""Every sort pages by key: the feature index, or a sort value with the feature index after it."""

Cursor = tuple[float | str | None, int]
"""Where a page by key starts: after the row with this (sort value, feature index). The value is None for the
index sort, and for a row of the unlabelled (unscored) part of the label (score) sort; a label sort's value is
the label's first LABEL_SORT_CHARS characters."""


def list_features(
    session: Session,
    *,
    sae_id: int,
    sort: SortKey = "index",
    descending: bool = False,
    state: StateFilter = "all",
    tag: str | None = None,
    query: str | None = None,
    whole_words: bool = False,
    limit: int = 50,
    offset: int = 0,
    after: Cursor | None = None,
) -> tuple[list[FeatureRow], int | None]:
    """One page of an SAE's features and the total matching (None where only a scan could count it: a text
    search, a tag with another filter), sorted and filtered as a list page asks; `query` matches labels, drafts
    and top tokens as a substring, or with `whole_words` as whole words.

    Every sort orders ties by feature index in the sort's direction and, given `after`, starts past that row
    through an index (keyset) instead of skipping `offset` rows, so a page deep in a million-feature list costs
    what the first does. The label and score sorts list the labelled (scored) features first, then the rest.
    A search in index order first walks a short stretch of the list testing each feature (`_walk_first`), which
    finds a page of a common word without the index. Otherwise, or where that stretch held too few, it looks its
    candidates up in the text index (`text_search.candidates`) and pages through those; where the index cannot
    narrow it (a query under three characters, or too many candidates) the page walks the list in its order
    testing each feature, which stops at the page's end.
    """
    sae = session.get(Sae, sae_id)
    if sort not in KEYSET_SORTS:
        raise ValueError(f"unknown sort {sort!r}; choose one of {', '.join(KEYSET_SORTS)}")
    cap = candidate_cap(offset + limit, sae.d_sae if sae is not None else 0)
    filters, total = _plan(session, sae, state, tag, query, whole_words, cap)
    label = LABEL
    drafted = DRAFTED if state == "draft" or sort == "score" or query else None
    head: list[FeatureRow] = []
    if query and sae is not None:
        by_key = sort == "index" and not offset  # a page in index order from a key: stretches and chunks serve it
        if by_key and len(query) >= MIN_CHARS:
            head, after = _walk_first(session, sae, filters, label, drafted, descending, after, limit, cap)
            if after is None:
                return head, total
        filters = replace(filters, within=candidates(session, sae_id=sae.id, query=query, cap=cap))
        if filters.within == []:
            return head, total
        if by_key and filters.within is not None:
            return head + _chunked_page(session, sae_id, filters, label, drafted, descending, after,
                                        limit - len(head)), total
    plain = (state, tag, query) == ("all", None, None)
    return head + _page(session, sae_id, filters, label, drafted, sort, descending, after, offset,
                        limit - len(head), plain), total


def _page(session: Session, sae_id: int, filters: Filters, label: NamedFromClause, drafted: NamedFromClause | None,
          sort: SortKey, descending: bool, after: Cursor | None, offset: int, limit: int, plain: bool
          ) -> list[FeatureRow]:
    """One page of the list as `filters` narrow it, in `sort`, after `after` or `offset` rows."""
    stmt = _filtered_features(sae_id, filters, label, drafted)
    if sort in ("label", "score"):
        split = _label_split(label) if sort == "label" else _score_split(drafted)
        first = _filtered_features(sae_id, filters, label, drafted, split.table)
        return _split_page(session, first.where(split.present), stmt.where(~split.present), split, descending,
                           after, offset, limit)
    columns = {"index": Feature.feature_index, "density": Feature.density, "max_act": Feature.max_act,
               "mean_act": Feature.mean_act}
    stmt = _keyset_page(stmt, columns[sort], descending, after, offset, plain)
    return [_row(*row) for row in session.execute(stmt.limit(limit))]


def _chunked_page(session: Session, sae_id: int, filters: Filters, label: NamedFromClause,
                  drafted: NamedFromClause | None, descending: bool, after: Cursor | None, limit: int
                  ) -> list[FeatureRow]:
    """A search's page in index order from its candidates (`filters.within`) past the cursor, read in chunks
    that double from 2 x `limit` until the page is full: a page of the first of thousands of candidates reads a
    few hundred. In one statement, PostgreSQL hashed every label and draft of the SAE to join three thousand
    candidates (120-220 ms at a million features)."""
    assert filters.within is not None
    beyond = [i for i in filters.within if after is None or (i < after[1] if descending else i > after[1])]
    ordered, size = beyond[::-1] if descending else beyond, 2 * limit
    rows: list[FeatureRow] = []
    while ordered and len(rows) < limit:
        chunk, ordered, size = ordered[:size], ordered[size:], 2 * size
        rows += _page(session, sae_id, replace(filters, within=chunk), label, drafted, "index", descending, after, 0,
                      limit - len(rows), plain=False)
    return rows


WALK_FIRST_ROWS = 20
"""How many features a search in index order tests per row of its page in its first stretch (`_walk_first`)."""


def _walk_first(session: Session, sae: Sae, filters: Filters, label: NamedFromClause, drafted: NamedFromClause | None,
                descending: bool, after: Cursor | None, limit: int, cap: int
                ) -> tuple[list[FeatureRow], Cursor | None]:
    """A search's page from stretches of the list in index order, and where the rest of the page starts: None
    when the stretches held the whole page, or reached the end of the list.

    The first stretch is WALK_FIRST_ROWS x `limit` features, each next one twice the last, for as long as the
    matches found so far say the whole list holds more than `cap` (text_search.candidate_cap), where the text
    index would give up, and until `cap` features have been walked. A common word fills its page there, in
    fewer reads than the text index makes for it: GIN builds its whole bitmap of the word's features before a
    LIMIT stops anything, 12-29 ms a search at a million features on PostgreSQL. A rare word costs the first
    stretch (2-3 ms) and then the lookup it would have made anyway; a word common only among the first features
    (labelled in order, say) costs `cap` features walked at most before the lookup.

    Each stretch is a range of keys read whole, with no LIMIT: given one, PostgreSQL planned for stopping early
    and read the stretch's labels again for each feature, 11.5 ms for a stretch of a thousand features against
    2.4 ms without."""
    rows: list[FeatureRow] = []
    width, walked = WALK_FIRST_ROWS * limit, 0
    start = after[1] if after is not None else (sae.d_sae if descending else -1)
    while width:
        end = start - width if descending else start + width
        span = (end, start - 1) if descending else (start + 1, end)
        stmt = _filtered_features(sae.id, replace(filters, span=span), label, drafted)
        stmt = _keyset_page(stmt, Feature.feature_index, descending, None, 0, plain=False)
        rows += [_row(*row) for row in islice(session.execute(stmt), limit - len(rows))]
        walked += width
        if len(rows) == limit or (end <= 0 if descending else end >= sae.d_sae - 1):
            return rows, None
        if walked >= cap or len(rows) * sae.d_sae <= cap * walked:  # the text index can narrow it now
            return rows, (None, end)
        start, width = end, 2 * width
    return rows, (None, start)


def _plan(session: Session, sae: Sae | None, state: StateFilter, tag: str | None, query: str | None,
          whole_words: bool, cap: int) -> tuple[Filters, int | None]:
    """The filters of a page, with what it reads first, and how many features match (None where only a walk of
    the features could tell: a text search, a tag with another filter).

    Each filter's features are counted over the rows people added (labels, drafts, tags) through their indexes, a
    cost in those rows, never in features. A filter with no more rows than `cap` (text_search.candidate_cap) leads: the
    page reads them first and sorts them (at most the cap); one with more is tested on each feature as the page
    walks the list in its order, where it soon finds a page's worth (the cap balances the two). Planners cannot
    make this choice: SQLite's does not weigh a LIMIT's early stop, and neither knows how many features a text
    search matches. A search's text lookup is list_features' (it may not need one)."""
    recorded = sae if sae is not None and sae.recorded_at is not None else None
    state_count = _state_count(session, recorded, state) if recorded else None
    tag_count = tagged_count(session, sae_id=recorded.id, tag=tag) if recorded and tag else None
    filters = Filters(state, tag, lead_state=state in LEADING_STATES and state_count is not None and state_count <= cap,
                      lead_tag=tag_count is not None and tag_count <= cap,
                      bound_joins=session.get_bind().dialect.name == "postgresql")
    if query:
        return replace(filters, match=matcher(query, whole_words)), None
    if recorded is None:
        return filters, 0  # only a recording stores features
    return filters, (state_count if not tag else tag_count if state == "all" else None)


def cursor_of(row: FeatureRow, sort: SortKey) -> Cursor:
    """The cursor of the page after `row` in `sort`."""
    label = row.label[:LABEL_SORT_CHARS] if row.label is not None else None
    values = {"index": None, "density": row.density, "max_act": row.max_act, "mean_act": row.mean_act,
              "label": label, "score": row.score}
    return values[sort], row.feature_index


def _keyset_page(stmt: Select, column: Any, descending: bool, after: Cursor | None, offset: int, plain: bool) -> Select:
    """Order by (column, feature_index), both in the sort's direction, starting after `after` or `offset` rows.

    The unfiltered index sort turns an offset into a key (feature indices are 0..d_sae-1, every one a row),
    so numbered pages of the plain list never skip rows either."""
    index_sort = column is Feature.feature_index
    if after is None and offset and plain and index_sort and not descending:
        after = (None, offset - 1)
        offset = 0
    if after is not None:
        value, index = after
        if index_sort:
            stmt = stmt.where(_beyond(Feature.feature_index, index, descending))
        else:
            stmt = stmt.where(_beyond(tuple_(column, Feature.feature_index), tuple_(value, index), descending))
        offset = 0
    keys = [column] if index_sort else [column, Feature.feature_index]
    return stmt.order_by(*(key.desc() if descending else key.asc() for key in keys)).offset(offset)


def _beyond(left: Any, right: Any, descending: bool) -> ColumnElement[bool]:
    """Rows past the cursor `right` in the sort's direction."""
    return left < right if descending else left > right


LABEL_SORT_CHARS = 200
"""The label sort orders by a label's first 200 characters (then the feature index): the expression index
ix_labels_sort serves it, and a whole label (up to 2000 characters, more when imported) could pass PostgreSQL's
limit of about 2.7 kB on a B-tree entry."""


def label_sort_key(text: SQLColumnExpression[str]) -> ColumnElement[str]:
    """The label sort's value, written as ix_labels_sort's expression (literal arguments: a bound parameter
    would keep either database from matching the query to the index)."""
    return func.substr(text, literal_column("1"), literal_column(str(LABEL_SORT_CHARS)))


@dataclass(frozen=True)
class _Split:
    """A sort by a value only some features have: those first, by (value, their feature index) through the
    value's own table and index, then the rest by feature index, each part paged by key on its own."""

    table: NamedFromClause
    """The joined table (labels or explanations) whose index orders the first part."""
    value: ColumnElement[Any]
    """The sort value, on that table."""
    index: ColumnElement[int]
    """The feature index on that same table, so that its index serves the tie-break too."""
    present: ColumnElement[bool]
    """Whether a feature has the value (it is in the first part)."""


def _label_split(label: NamedFromClause) -> _Split:
    return _Split(label, label_sort_key(label.c.text), label.c.feature_index, _labelled(label))


def _labelled(label: NamedFromClause) -> ColumnElement[bool]:
    """Whether the feature has a current label: tested on a column of the join condition, so that PostgreSQL
    reads its negation as an anti-join, and estimates its rows, instead of a filter on a left join it expected
    to keep one row (a hash join of every feature where a walk of a few in key order would do)."""
    return label.c.feature_index.is_not(None)


def _score_split(drafted: NamedFromClause | None) -> _Split:
    assert drafted is not None  # list_features joins the explanations for the score sort
    return _Split(drafted, drafted.c.score, drafted.c.feature_index, drafted.c.score.is_not(None))


def _split_page(session: Session, first: Select, rest: Select, split: _Split, descending: bool, after: Cursor | None,
                offset: int, limit: int) -> list[FeatureRow]:
    """A page of a split sort: from the first part (unless the cursor is already in the rest), topped up from
    the rest. An offset past the first part is counted off against the first part's size, which counts only
    features that have the value (labels or explanations, not the whole SAE)."""
    in_rest = after is not None and after[0] is None
    rows: list[FeatureRow] = []
    if not in_rest:
        if after is not None:
            first = first.where(_beyond(tuple_(split.value, split.index), tuple_(*after), descending))
        keys = (split.value, split.index)
        first = first.order_by(*(key.desc() if descending else key.asc() for key in keys))
        rows = [_row(*row) for row in session.execute(first.offset(0 if after else offset).limit(limit))]
        if after is None and offset and not rows:
            offset -= session.scalar(select(func.count()).select_from(first.subquery())) or 0
        else:
            offset = 0
    if len(rows) < limit:
        rest = _keyset_page(rest, Feature.feature_index, descending,
                            after if in_rest else None, offset, plain=False)
        rows += [_row(*row) for row in session.execute(rest.limit(limit - len(rows)))]
    return rows


def _state_count(session: Session, sae: Sae, state: StateFilter) -> int | None:
    """How many of a recorded SAE's features pass the state filter: from its recorded summary, or counted over
    its labels or drafts through their indexes (None for an unknown filter, which the query refuses)."""
    dead, dense = sae.dead_count or 0, sae.dense_count or 0
    counts: dict[str, Callable[[], int]] = {
        "all": lambda: sae.d_sae, "alive": lambda: sae.d_sae - dead, "dead": lambda: dead, "dense": lambda: dense,
        "labelled": lambda: labelled_count(session, sae_id=sae.id),
        "unlabelled": lambda: sae.d_sae - labelled_count(session, sae_id=sae.id),
        "draft": lambda: draft_count(session, sae_id=sae.id),
        **{name: partial(labelled_count, session, sae_id=sae.id, sources=sources)
           for name, sources in LABEL_SOURCES.items()}}
    return counts[state]() if state in counts else None


LISTED = (Feature.feature_index, Feature.density, Feature.max_act, Feature.mean_act, Feature.is_dead, Feature.is_dense,
          Feature.top_text)
"""The columns a list row shows, read alone: whole Feature rows decoded four JSON columns each (logits, neighbours,
co-activation), a third of a list query's 3.7 ms at 50 rows."""


def _row(index: int, density: float, max_act: float, mean_act: float, is_dead: bool, is_dense: bool,
         label: str | None, top_text: str, draft: str | None = None, status: str | None = None,
         score: float | None = None) -> FeatureRow:
    return FeatureRow(index, density, max_act, mean_act, is_dead, is_dense, label, top_text,
                      draft if status == DRAFT else None, score)


# Feature page


@dataclass(frozen=True)
class ExampleView:
    """An example window unpacked: token pieces with this feature's activation on each."""

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
    model: str = ""
    """What loads its model (services.inference.model_spec), for the page to say whether it is loaded."""


@dataclass(frozen=True)
class FeaturePage:
    """Everything stored about one feature that its page, its API answer and the exports show."""

    sae: SaeHeader
    feature: Row[Any]
    """The feature's row of the features table, which reads like a Feature."""
    examples: Sequence[Row[Any]]
    """(token_ids, pieces, acts, peak, value, interval, context_index, start) as stored: top examples by rank,
    then the quantile samples by interval and rank. Packed, because the HTML page renders them straight
    from the float16 bytes (app/presenters/feature_page.py); `top` and `quantiles` unpack them for the API
    and the exports."""
    labels: list[Row[Any]]
    """Label history, newest first: (id, feature_index, text, source, created_at, author_name) rows, which read
    like Label objects."""
    tags: list[str]
    neighbours: dict[int, FeatureBrief]
    """What each nearest feature is (label, top tokens, strongest example), for the links to them."""
    draft: Explanation | None
    """The newest unverified draft explanation, read only for a feature that the page's first query finds has
    one: most features have none, and asking anyway cost every page about 1 ms."""

    @property
    def label(self) -> str | None:
        return self.labels[0].text if self.labels else None

    @property
    def n_intervals(self) -> int:
        """How many equal intervals of 0..max_act the recording drew quantile samples from (0: none)."""
        return (self.sae.record_config or {}).get("n_intervals", 0)

    def interval_bounds(self, interval: int) -> tuple[float, float] | None:
        """The activations quantile interval `interval` covers; None when the recording names no intervals."""
        n, top = self.n_intervals, self.feature.max_act
        return (interval / n * top, (interval + 1) / n * top) if n else None

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
    return ExampleView(unpack_ids(row.token_ids), list(row.pieces), unpack_acts(row.acts), row.peak, row.value,
                       row.interval, row.context_index, row.start)


# Built once: constructing a statement costs about as much as running it on SQLite. A page runs three: the
# feature with its SAE, its examples, and what its neighbours are (crud.briefs). The first also says whether the
# feature has labels, tags or a draft explanation, each read only then: most features have none.
# Each is a round trip on PostgreSQL, which is most of a page's time there. These read plain rows through
# the Core connection: through the ORM, with a Feature and a Sae entity, the first took twice the CPU on
# SQLite (0.145 against 0.071 ms here) and a third more on PostgreSQL.
_FEATURE_AND_SAE = (
    select(Feature.__table__, Sae.name.label("sae_name"), Sae.d_sae.label("sae_d_sae"),
           Sae.record_config.label("sae_record_config"), Sae.recorded_at.label("sae_recorded_at"),
           func.coalesce(func.nullif(Sae.model_spec, ""), Sae.model_name).label("sae_model"),
           exists().where(FeatureTag.sae_id == Feature.sae_id,
                          FeatureTag.feature_index == Feature.feature_index).label("tagged"),
           exists().where(Label.sae_id == Feature.sae_id, Label.feature_index == Feature.feature_index).label("labelled"),
           exists().where(Explanation.sae_id == Feature.sae_id, Explanation.feature_index == Feature.feature_index,
                          Explanation.status == DRAFT).label("drafted"))
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
"""For the HTML page, which takes the pieces from the SAE's token texts (app/presenters/heatmaps.py)."""


def feature_page(session: Session, *, sae_id: int, feature_index: int, with_pieces: bool = True) -> FeaturePage:
    """The data of one feature page; without pieces, the examples' are None."""
    connection = session.connection()
    feature = connection.execute(_FEATURE_AND_SAE, {"sae_id": sae_id, "index": feature_index}).one_or_none()
    if feature is None:
        raise _no_feature(session, sae_id, feature_index)
    sae = SaeHeader(sae_id, feature.sae_name, feature.sae_d_sae, feature.sae_record_config, feature.sae_recorded_at,
                    feature.sae_model)
    statement = _EXAMPLES if with_pieces else _EXAMPLES_WITHOUT_PIECES
    examples = connection.execute(statement, {"feature_id": feature.id}).all()
    labels = label_rows(session, sae_id=sae_id, indices=[feature_index]) if feature.labelled else []
    tags = feature_tags(session, sae_id=sae_id, feature_index=feature_index) if feature.tagged else []
    neighbours = feature_briefs(session, sae_id=sae_id, indices=[n[0] for n in feature.neighbours])
    draft = current_draft(session, sae_id=sae_id, feature_index=feature_index) if feature.drafted else None
    return FeaturePage(sae, feature, examples, list(labels), tags, neighbours, draft)


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
    return dict(rows.all())
