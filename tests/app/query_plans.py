"""The plans of the statements a call runs, for tests that a page reads indexes, not whole tables."""

from __future__ import annotations

from sqlalchemy import event


def plans(session, call, postgres_setup: tuple[str, ...] = ()) -> list[str]:
    """The plan of each statement `call` runs: SQLite's QUERY PLAN; PostgreSQL's with sequential scans and sorts
    priced out, after `postgres_setup` (which the test's transaction rolls back: e.g. indexes dropped that the
    planner prefers only on a small table), and SQLite's without table statistics, so that a small table's cheap
    plan does not hide whether an index serves."""
    statements: list[tuple[str, object]] = []
    engine = session.get_bind()

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    postgres = engine.dialect.name == "postgresql"
    cursor = session.connection().connection.cursor()
    if postgres:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        for statement in postgres_setup:
            cursor.execute(statement)
    else:
        _forget_statistics(cursor)
    try:
        found = []
        for statement, parameters in statements:
            cursor.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement, parameters)
            found.append("\n".join(str(row[0] if postgres else row[-1]) for row in cursor.fetchall()))
    finally:
        if not postgres:
            cursor.execute("ROLLBACK TO plan_statistics")
            cursor.execute("RELEASE plan_statistics")
            cursor.execute("ANALYZE sqlite_schema")
    return found


def _forget_statistics(cursor) -> None:
    """SQLite's analogue of pricing sorts out: plan as if no table had statistics, as a large store's planner
    guesses, until the savepoint is rolled back. Another test's store may have left statistics (`PRAGMA optimize`
    after an import) saying the test's tables hold a few rows, where sorting them beats any index."""
    cursor.execute("SAVEPOINT plan_statistics")
    cursor.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'")
    if cursor.fetchone():
        cursor.execute("DELETE FROM sqlite_stat1")
    cursor.execute("ANALYZE sqlite_schema")  # the planner rereads the (now empty) statistics
