"""example references checked per statement: PostgreSQL checks examples.feature_id and context_id once per COPY

A foreign key checks every inserted row with a query of its own, run after the COPY has ended: at a million
features (2.6M examples, two keys each) those 5.3M checks took 31 s of a 110 s import. Statement-level triggers
with transition tables keep what the two keys gave, in one set-based query per statement:

- an inserted or updated example must name an existing feature and context (SQLSTATE 23503 otherwise);
- referenced rows that another transaction created are locked FOR KEY SHARE, as a key's check locks them, so
  that they cannot be deleted before this transaction commits; rows this transaction created (the importer's
  own features and contexts) cannot be seen, so not deleted, by any other, and are not locked;
- deleting features or contexts deletes their examples (ON DELETE CASCADE);
- changing the id of a feature or context that examples name fails (ON UPDATE NO ACTION).

SQLite keeps its foreign keys: it checks them as each row goes in, at a small cost. The models keep both keys
(`app.models.STATEMENT_CHECKED_KEYS` names them), so SQLite's schema and the ORM's joins are unchanged.

Revision ID: 0014_example_reference_triggers
Revises: 0013_text_search_index
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = '0014_example_reference_triggers'
down_revision = '0013_text_search_index'
branch_labels = None
depends_on = None

REFERENCES = {"feature_id": ("features", "fk_examples_feature_id_features"),
              "context_id": ("contexts", "fk_examples_context_id_contexts")}
"""Each examples column, the table it names and the foreign key the triggers replace."""


def _check_inserted(column: str, table: str) -> str:
    """PL/pgSQL that locks the other transactions' `table` rows that new_rows.`column` names, then fails if any
    named row is missing. The distinct ids go into an array once: index probes by `= ANY` took 4 s where
    semi-joins against the transition table took 12 (2.6M examples)."""
    return f"""
  ids := ARRAY(SELECT DISTINCT {column} FROM new_rows);
  PERFORM 1 FROM {table} r WHERE r.id = ANY(ids) AND r.xmin <> mine FOR KEY SHARE OF r;
  IF (SELECT count(*) FROM {table} r WHERE r.id = ANY(ids)) < cardinality(ids) THEN
    SELECT n.id INTO missing FROM unnest(ids) n(id) WHERE NOT EXISTS (SELECT 1 FROM {table} r WHERE r.id = n.id)
      LIMIT 1;
    RAISE foreign_key_violation USING MESSAGE = format(
      'examples.{column} %s is not in {table}', missing), TABLE = 'examples', CONSTRAINT = '{REFERENCES[column][1]}';
  END IF;"""


FUNCTIONS = {
    "examples_check_references": f"""
DECLARE
  mine xid := pg_current_xact_id()::xid;
  ids bigint[];
  missing bigint;
BEGIN{''.join(_check_inserted(column, table) for column, (table, _) in REFERENCES.items())}
  RETURN NULL;
END""",
    "examples_delete_referencing": """
BEGIN
  EXECUTE format('DELETE FROM examples WHERE %I IN (SELECT id FROM old_rows)', TG_ARGV[0]);
  RETURN NULL;
END""",
    "examples_keep_referenced_ids": """
DECLARE
  gone bigint;
BEGIN
  EXECUTE format('SELECT o.id FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id) '
                 'AND EXISTS (SELECT 1 FROM examples e WHERE e.%I = o.id) LIMIT 1', TG_ARGV[0]) INTO gone;
  IF gone IS NOT NULL THEN
    RAISE foreign_key_violation USING MESSAGE = format(
      '%s.id %s is still named by examples.%s', TG_TABLE_NAME, gone, TG_ARGV[0]), TABLE = 'examples';
  END IF;
  RETURN NULL;
END""",
}
"""Each trigger function's name and body (PL/pgSQL)."""

TRIGGERS = {
    "examples_check_references_insert": ("examples", "AFTER INSERT", "NEW TABLE AS new_rows",
                                         "examples_check_references()"),
    "examples_check_references_update": ("examples", "AFTER UPDATE", "NEW TABLE AS new_rows",
                                         "examples_check_references()"),
    **{f"{table}_delete_examples": (table, "AFTER DELETE", "OLD TABLE AS old_rows",
                                    f"examples_delete_referencing('{column}')")
       for column, (table, _) in REFERENCES.items()},
    **{f"{table}_keep_referenced_ids": (table, "AFTER UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                                        f"examples_keep_referenced_ids('{column}')")
       for column, (table, _) in REFERENCES.items()},
}
"""Each trigger's name, table, event, transition tables and function call."""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, body in FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}\n$$")
    for name, (table, event, transitions, call) in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {event} ON {table} REFERENCING {transitions} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {call}")
    for _, constraint in REFERENCES.values():
        op.drop_constraint(constraint, "examples", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, (table, constraint) in REFERENCES.items():
        op.create_foreign_key(constraint, "examples", table, [column], ["id"], ondelete="CASCADE")
    for name, (table, *_) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
