"""Neuronpedia's dataset import, re-stated in Python over its real schema, to test exports against.

What it follows, from Neuronpedia at the commit named in neuronpedia_schema/README.md:
- apps/webapp/prisma/migrations: the schema, applied from the vendored copy (`apply_schema`);
- apps/webapp/prisma/seed.ts: the `bot` user that owns imported data (`seed_bot_user`);
- apps/webapp/app/api/admin/import/route.ts: model.jsonl, sourceset.jsonl, source.jsonl each created through
  Prisma unless the row exists (a missing file stops the import); then features/, activations/ and
  explanations/ batch-*.jsonl.gz, listed as S3 lists keys (lexicographic, at most 1,000 a listing), the
  explanations gathered into chunks of 10,000 lines (`import_dataset`);
- apps/webapp/lib/db/import.ts `importJsonlString`: the column list comes from the keys of a file's first
  line, kept where the table has such a column, and the rows go in through jsonb_to_recordset with
  ON CONFLICT DO NOTHING (`import_jsonl`).
Prisma's `create` refuses unknown fields and values of the wrong JSON type; `prisma_create` does too. The code
is ours; only the schema SQL is Neuronpedia's.
"""

from __future__ import annotations

import gzip
import json
import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SCHEMA = Path(__file__).resolve().parent / "neuronpedia_schema" / "migrations"
BOT_USER_ID = "clkht01d40000jv08hvalcvly"
S3_LIST_LIMIT = 1000
EXPLANATION_CHUNK = 10_000
INSERT_CHUNK = 65_000


class ImportRefused(Exception):
    """The importer (or Prisma under it) would stop here; the message says why."""


def has_pgvector(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is not None


def apply_schema(conn: psycopg.Connection) -> bool:
    """Every vendored migration in order; returns whether pgvector was there (else embeddings are real[])."""
    vector = has_pgvector(conn)
    for directory in sorted(p for p in SCHEMA.iterdir() if p.is_dir()):
        sql = (directory / "migration.sql").read_text()
        if not vector:
            sql = sql.replace('CREATE EXTENSION IF NOT EXISTS "vector";', "").replace("vector(256)", "real[]")
        conn.execute(sql.encode())  # bytes: run as a script of many statements, as `prisma migrate deploy` does
    return vector


def seed_bot_user(conn: psycopg.Connection) -> None:
    """The user seed.ts upserts first: the default creator of uploaded models, sources and activations."""
    conn.execute(
        'INSERT INTO "User" (id, name, bot, admin, "emailUnsubscribeCode", "emailNewsletterNotification", '
        '"emailUnsubscribeAll") VALUES (%s, %s, true, true, %s, false, true) ON CONFLICT (id) DO NOTHING',
        (BOT_USER_ID, "bot", secrets.token_hex(16)))


def columns_of(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                        (table,)).fetchall()
    return dict(rows)


def _json_type_fits(data_type: str, value: Any) -> bool:
    """Whether Prisma would accept this JSON value for a column of this SQL type."""
    if value is None:
        return True
    if data_type == "ARRAY":
        return isinstance(value, list)
    if data_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if data_type == "double precision":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if data_type == "boolean":
        return isinstance(value, bool)
    if data_type == "jsonb":
        return True
    return isinstance(value, str)  # text, enums, timestamps (route.ts parses createdAt/updatedAt as dates)


def prisma_create(conn: psycopg.Connection, table: str, data: dict[str, Any]) -> None:
    """One row as `prisma.<table>.create({data})` makes it: every field must be a scalar of the model."""
    columns = columns_of(conn, table)
    unknown = sorted(set(data) - set(columns))
    if unknown:
        raise ImportRefused(f"Prisma refuses unknown field(s) {unknown} for {table}")
    wrong = sorted(k for k, v in data.items() if not _json_type_fits(columns[k], v))
    if wrong:
        raise ImportRefused(f"Prisma refuses the type of field(s) {wrong} for {table}")
    names = ", ".join(f'"{k}"' for k in data)
    try:
        conn.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM jsonb_populate_record(NULL::"{table}", %s)',
                     (Jsonb(data),))
    except psycopg.errors.Error as err:
        raise ImportRefused(f"{table}: {err.diag.message_primary}") from None


def import_jsonl(conn: psycopg.Connection, table: str, jsonl: str) -> int:
    """importJsonlString: returns the number of rows inserted."""
    jsonl = jsonl.replace("\\u0000", " ")
    lines = [line for line in jsonl.strip().split("\n") if line.strip()]
    available = list(json.loads(lines[0]))  # JSON.parse of an empty first line throws there too
    columns = conn.execute(
        """SELECT column_name,
                  CASE WHEN data_type = 'ARRAY' THEN udt_name::regtype::text || '[]'
                       WHEN data_type = 'USER-DEFINED' THEN (SELECT t.typname::text FROM pg_type t WHERE t.typname = c.udt_name)
                       ELSE data_type END
           FROM information_schema.columns c WHERE table_name = %s AND column_name = ANY(%s)
           ORDER BY ordinal_position""", (table, available)).fetchall()
    defs = ", ".join(f'"{name}" {kind}' for name, kind in columns)
    names = ", ".join(f'"{name}"' for name, _ in columns)
    query = (f'INSERT INTO "{table}" ({names}) SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS t({defs}) '
             "ON CONFLICT DO NOTHING")
    inserted = 0
    for start in range(0, len(lines), INSERT_CHUNK):
        chunk = "[" + ",".join(lines[start:start + INSERT_CHUNK]) + "]"
        try:
            inserted += conn.execute(query, (chunk,)).rowcount
        except psycopg.errors.Error as err:
            raise ImportRefused(f"{table}: {err.diag.message_primary}") from None
    return inserted


def _jsonl_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ImportRefused(f"{path.name} is missing (the importer downloads it unconditionally)")
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def _listed(folder: Path) -> list[Path]:
    """The batch files S3 lists under a prefix: lexicographic keys, the first 1,000 only."""
    files = sorted(folder.glob("*.jsonl.gz"), key=lambda p: p.name) if folder.is_dir() else []
    return files[:S3_LIST_LIMIT]


def _gunzip(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read()


def import_dataset(conn: psycopg.Connection, directory: Path, model_id: str) -> dict[str, int]:
    """Import `<modelId>/<sourceId>/` as route.ts does; returns rows inserted per table."""
    inserted = {"Model": 0, "SourceSet": 0, "Source": 0, "Neuron": 0, "Activation": 0, "Explanation": 0}
    for line in _jsonl_lines(directory / "model.jsonl"):
        if not conn.execute('SELECT 1 FROM "Model" WHERE id = %s', (line.get("id"),)).fetchone():
            prisma_create(conn, "Model", line)
            inserted["Model"] += 1
    for line in _jsonl_lines(directory / "sourceset.jsonl"):
        if not conn.execute('SELECT 1 FROM "SourceSet" WHERE "modelId" = %s AND name = %s',
                            (model_id, line.get("name"))).fetchone():
            prisma_create(conn, "SourceSet", {**line, "urls": line.get("urls") or []})
            inserted["SourceSet"] += 1
    for line in _jsonl_lines(directory / "source.jsonl"):
        if not conn.execute('SELECT 1 FROM "Source" WHERE "modelId" = %s AND id = %s',
                            (model_id, line.get("id"))).fetchone():
            prisma_create(conn, "Source", line)
            inserted["Source"] += 1
    for path in _listed(directory / "features"):
        inserted["Neuron"] += import_jsonl(conn, "Neuron", _gunzip(path))
    for path in _listed(directory / "activations"):
        inserted["Activation"] += import_jsonl(conn, "Activation", _gunzip(path))
    pending: list[str] = []
    for path in _listed(directory / "explanations"):
        pending += [line for line in _gunzip(path).strip().split("\n") if line.strip()]
        while len(pending) >= EXPLANATION_CHUNK:
            inserted["Explanation"] += import_jsonl(conn, "Explanation", "\n".join(pending[:EXPLANATION_CHUNK]))
            pending = pending[EXPLANATION_CHUNK:]
    if pending:
        inserted["Explanation"] += import_jsonl(conn, "Explanation", "\n".join(pending))
    return inserted
