"""Text search of an SAE's feature list (issue 22): what `query` matches, and the features that may match it
found through a trigram index instead of a scan of every feature (16-24 s at a million features).

A feature matches when its top text, its current label or its draft (unverified) explanation contains the query,
as a substring or with whole words as whole words (`matcher`). The index only narrows: `candidates` gives a
superset of the matching features, and list_features keeps those the matcher accepts, so the results are the
scan's by construction, on either database.

PostgreSQL: GIN trigram indexes (pg_trgm, migration 0013) on features.top_text, labels.text and
explanations.text, which ILIKE '%q%' reads. SQLite: the FTS5 table `feature_search` (trigram tokenizer, 3.34+),
one row per feature and kind (top text, current label, draft), keyed by its rowid (`_key`): triggers keep the
labels' and drafts' rows and remove deleted features' rows; app.ingest fills the top texts after each load
(`index_top_texts`). Its detail=none keeps no token positions (about 200 instead of 570 bytes a feature for
160 characters of top text), so it answers with features holding every trigram of the query, a superset the
matcher trims.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from math import isqrt

from sqlalchemy import ColumnElement, CompoundSelect, SQLColumnExpression, and_, select, text, union_all
from sqlalchemy.orm import Session

from ..models import Explanation, Feature, Label
from .explanations import DRAFT

Matcher = Callable[[SQLColumnExpression[str]], ColumnElement[bool]]

MIN_CHARS = 3
"""Trigrams need three characters: a shorter query has no candidates to look up, so list_features walks the list
in its order testing each feature, stopping at the page's end (what every search did before the index). With
one or two characters nearly every feature's text matches and the walk is short; only a rare pair reads far."""

FTS_TABLE = "feature_search"
TOP_TEXT, LABEL, DRAFT_TEXT = 0, 1, 2
"""The kinds of text in `feature_search`, the middle field of its rowid."""
SQLITE_SEARCH_TABLES = {FTS_TABLE, *(f"{FTS_TABLE}_{shadow}" for shadow in ("data", "idx", "content", "config"))}
"""The FTS5 table and its shadow tables: the schema's, but not the ORM's (tests/app/test_store.py)."""
POSTGRES_SEARCH_INDEXES = {"ix_features_top_text_trgm", "ix_labels_text_trgm", "ix_explanations_text_trgm"}
"""The GIN trigram indexes: the schema's, but not the ORM's, whose tables are the same on both databases."""


def matcher(query: str, whole_words: bool) -> Matcher:
    """What a feature's text must satisfy to match `query`."""
    return _word_matcher(query) if whole_words else _substring_matcher(query)


def _substring_matcher(query: str) -> Matcher:
    return lambda column: column.icontains(query, autoescape=True)


def _word_matcher(query: str) -> Matcher:
    """Whole words: `query` with no letter, digit or underscore just before or after it ("cat" finds "the cat."
    but not "category"). One pattern both databases read alike: Python's re on SQLite (SQLAlchemy registers it),
    an ARE on PostgreSQL; both take (?i) and \\W, and re.escape writes no escape either reads otherwise."""
    start = r"(^|\W)" if re.match(r"\w", query) else ""
    end = r"(\W|$)" if re.search(r"\w$", query) else ""
    pattern = f"(?i){start}{re.escape(query)}{end}"
    # The substring test first: cheap in SQL, it leaves the pattern (a Python call per row on SQLite) few rows.
    return lambda column: and_(column.icontains(query, autoescape=True), column.regexp_match(pattern))


def candidate_cap(rows: int, d_sae: int) -> int:
    """How many candidates to look up before walking the list instead, for a page ending `rows` rows in.

    Looking candidates up costs one read each; walking the list in its order costs about rows x d_sae / matches
    reads, fewer the more features match. The two are equal at sqrt(rows x d_sae): 7,100 candidates for a
    page of 50 at a million features, where either costs at most that many reads."""
    return max(isqrt(rows * d_sae), 1)


def candidates(session: Session, *, sae_id: int, query: str, cap: int) -> list[int] | None:
    """The features of SAE `sae_id` whose top text, current label or draft may contain `query`, in index
    order: every feature that does, perhaps a few that do not. None when the index cannot narrow the search: the
    query is shorter than MIN_CHARS, or more than `cap` texts hold it (then walking the list finds a page
    sooner). Read through the index and at most `cap` + 1 rows of it."""
    if len(query) < MIN_CHARS:
        return None
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        found = list(connection.execute(_postgres_candidates(sae_id, query).limit(cap + 1)).scalars())
    else:
        lo, hi = _key(sae_id, TOP_TEXT, 0), _key(sae_id, DRAFT_TEXT, INDEX_MASK)
        found = [key & INDEX_MASK for key in connection.execute(_SQLITE_CANDIDATES, {
            "terms": _fts_terms(query), "lo": lo, "hi": hi, "n": cap + 1}).scalars()]
    return sorted(set(found)) if len(found) <= cap else None


def _postgres_candidates(sae_id: int, query: str) -> CompoundSelect:
    """Each kind's features holding the query, each read through its GIN trigram index (one per table: an OR
    across the three tables would read none of them)."""
    contains = _substring_matcher(query)
    return union_all(
        select(Feature.feature_index).where(Feature.sae_id == sae_id, contains(Feature.top_text)),
        select(Label.feature_index).where(Label.sae_id == sae_id, contains(Label.text)),
        select(Explanation.feature_index).where(Explanation.sae_id == sae_id, Explanation.status == DRAFT,
                                                contains(Explanation.text)))


INDEX_MASK = (1 << 31) - 1
"""Feature indices are below 2**31 (app.deps.FeatureIndex)."""


def _key(sae_id: int, kind: int, feature_index: int) -> int:
    """A row's rowid in `feature_search`: (sae_id, kind, feature_index) in 64 bits, so each SAE's rows, and each
    kind's within them, are one range of rowids, which FTS5 seeks to without reading other SAEs' matches.
    Migration 0013's triggers write the same layout."""
    return (sae_id << 33) | (kind << 31) | feature_index


def _sql_key(kind: int) -> str:
    """`_key` in SQL, of a row with sae_id and feature_index columns."""
    return f"(sae_id << 33) | ({kind} << 31) | feature_index"


_SQLITE_CANDIDATES = text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :terms "
                          "AND rowid BETWEEN :lo AND :hi LIMIT :n")


def _fts_terms(query: str) -> str:
    """An FTS5 query for texts holding every trigram of `query`, each a quoted string (so that no character of
    the query is read as FTS5 syntax); detail=none answers no phrase, so adjacency is the matcher's to check."""
    trigrams = dict.fromkeys(query[i:i + 3] for i in range(len(query) - 2))
    return " AND ".join('"' + trigram.replace('"', '""') + '"' for trigram in trigrams)


def index_top_texts(session: Session, *, sae_id: int) -> None:
    """Put the top texts of SAE `sae_id`'s features, just loaded, in the SQLite search table (inside the
    caller's transaction; the features' delete trigger took the previous recording's out); PostgreSQL's GIN
    index on features.top_text is kept by the database itself.

    One INSERT ... SELECT after the load, not a trigger on each inserted feature: FTS5 writes out what it holds
    at the end of every statement, so a trigger under the bulk path's executemany of single rows was 2.3 times
    slower (7,000 against 16,000 160-character texts a second here)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.execute(text(
            f"INSERT INTO {FTS_TABLE} (rowid, text) SELECT {_sql_key(TOP_TEXT)}, top_text "
            "FROM features WHERE sae_id = :sae_id"), {"sae_id": sae_id})
