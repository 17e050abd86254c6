"""text search index: the feature list's search reads a trigram index instead of every feature (issue 22)

PostgreSQL: pg_trgm's GIN indexes on features.top_text, labels.text and explanations.text, which ILIKE '%q%'
reads. SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34+), one row per feature and kind (0 top
text, 1 current label, 2 draft explanation), its rowid (sae_id << 33) | (kind << 31) | feature_index
(app/crud/text_search.py reads it). Triggers keep the label and draft rows and drop a deleted feature's row;
app.ingest adds the top texts after each load, in one statement (a trigger per inserted feature was 2.3 times
slower under the bulk path's executemany).

A later migration that rebuilds features, labels or explanations in batch mode on SQLite (copy, drop, rename)
drops these triggers with the old table and must create them again; tests/app/test_store.py checks they exist.

Revision ID: 0013_text_search_index
Revises: 0012_label_score_keyset
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_text_search_index'
down_revision = '0012_label_score_keyset'
branch_labels = None
depends_on = None

TABLE = "feature_search"
TRGM_INDEXES = {"ix_features_top_text_trgm": ("features", "top_text"), "ix_labels_text_trgm": ("labels", "text"),
                "ix_explanations_text_trgm": ("explanations", "text")}
KINDS = {"features": 0, "labels": 1, "explanations": 2}
CURRENT = {"labels": "ORDER BY id DESC LIMIT 1", "explanations": "AND status = 'draft'"}
"""Which of a feature's rows is indexed: its newest label; its explanation (one per feature) while a draft."""


def _key(row: str, table: str) -> str:
    return f"({row}.sae_id << 33) | ({KINDS[table]} << 31) | {row}.feature_index"


def _refresh(table: str, row: str) -> str:
    """Statements that set the indexed text of `row`'s feature from `table` (or remove it where there is none)."""
    return (f"DELETE FROM {TABLE} WHERE rowid = {_key(row, table)}; "
            f"INSERT INTO {TABLE} (rowid, text) SELECT {_key(table, table)}, text FROM {table} "
            f"WHERE sae_id = {row}.sae_id AND feature_index = {row}.feature_index {CURRENT[table]};")


UPDATED = {"features": "sae_id, feature_index, top_text", "labels": "sae_id, feature_index, text",
           "explanations": "sae_id, feature_index, text, status"}
"""The columns whose update changes what a row puts in the index."""

TRIGGERS = {
    "feature_search_features_delete": f"AFTER DELETE ON features BEGIN "
                                      f"DELETE FROM {TABLE} WHERE rowid = {_key('old', 'features')}; END",
    "feature_search_features_update": f"AFTER UPDATE OF {UPDATED['features']} ON features BEGIN "
                                      f"DELETE FROM {TABLE} WHERE rowid = {_key('old', 'features')}; "
                                      f"INSERT INTO {TABLE} (rowid, text) VALUES ({_key('new', 'features')}, "
                                      f"new.top_text); END",
    **{f"feature_search_{table}_{name}": f"AFTER {event} ON {table} BEGIN {body} END"
       for table in ("labels", "explanations")
       for name, event, body in (("insert", "INSERT", _refresh(table, "new")),
                                 ("delete", "DELETE", _refresh(table, "old")),
                                 ("update", f"UPDATE OF {UPDATED[table]}", _refresh(table, "old") + " "
                                  + _refresh(table, "new")))},
}
"""Each trigger's name and definition (after CREATE TRIGGER name)."""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, (table, column) in TRGM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON {table} USING gin ({column} gin_trgm_ops)")
        return
    version = bind.execute(sa.text("SELECT sqlite_version()")).scalar_one()
    if tuple(map(int, version.split("."))) < (3, 34):
        raise RuntimeError(f"SQLite {version} has no trigram tokenizer for the search index: saescope needs 3.34 "
                           "or newer (the sqlite3 module's library, e.g. that of Python 3.11+ on a current OS)")
    op.execute(f"CREATE VIRTUAL TABLE {TABLE} USING fts5(text, tokenize='trigram', detail=none, columnsize=0)")
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO {TABLE} (rowid, text) SELECT {_key('features', 'features')}, top_text FROM features")
    op.execute(f"INSERT INTO {TABLE} (rowid, text) SELECT {_key('labels', 'labels')}, text FROM labels "
               "WHERE id IN (SELECT max(id) FROM labels GROUP BY sae_id, feature_index)")
    op.execute(f"INSERT INTO {TABLE} (rowid, text) SELECT {_key('explanations', 'explanations')}, text "
               "FROM explanations WHERE status = 'draft'")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name in TRGM_INDEXES:
            op.execute(f"DROP INDEX {name}")
        return  # pg_trgm stays: other schemas in the database may use it
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute(f"DROP TABLE {TABLE}")
