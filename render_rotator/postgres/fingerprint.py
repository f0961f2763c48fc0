"""A database's content fingerprint, and the comparison that names every difference.

A fingerprint is taken in one snapshot (an exported one, such as the copy's or the
backup's, or a fresh one) by `jobs` sessions that all import it:

- every table's rows: a count and an order-independent checksum computed in SQL, the sum
  of a 64-bit hash of each row's text form, or, when every column allows it (PostgreSQL
  14+), of its values (`row_hash.py`: each column by its own exact hash or by its text
  form, mixed together per row), which skips formatting the whole row. Tables larger than
  `CHUNK_BYTES` with a primary key are summed per key range
  (boundaries from the source's statistics, reused verbatim on the other side), so a
  mismatch names where it is; small tables are summed many to a query;
- sequences (last_value, is_called);
- object definitions: columns (type, nullability, default, identity, generated),
  constraints, indexes, views and materialized views, functions, triggers, policies,
  comments, types, sequence parameters and extensions;
- the database's own settings (`ALTER DATABASE ... SET`, except the read-only switch the
  rotation itself turns on and off);
- large objects' contents (md5 each).

Row text forms are made comparable across servers and majors by setting the same
DateStyle, TimeZone, IntervalStyle, extra_float_digits, bytea_output and search_path
(`pg_catalog` only, so every name prints schema-qualified and reg* values print as names)
in every session. PostgreSQL 18 records NOT NULL as constraints; they are compared as the
columns' nullability, so a 15 -> 18 copy compares equal.

`mode="counts"` replaces the row checksums by exact counts and large objects' digests by
their existence (weaker: it misses changed values; kept as an explicit opt-out for speed).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from render_rotator.errors import UsageError
from render_rotator.postgres.catalog import (
    USER_SCHEMA,
    export_snapshot,
    not_extension_member,
    qualified,
)
from render_rotator.postgres.connect import QueryCancel, connection, sql_error
from render_rotator.postgres.row_hash import row_hashes
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

MODES = ("content", "counts")
# Tables larger than this (and with a primary key) are summed per key range.
CHUNK_BYTES = 64 << 20
MAX_CHUNKS = 64
# Tables smaller than this are summed up to BATCH_TABLES to a query.
SMALL_TABLE_BYTES = 1 << 20
BATCH_TABLES = 50
# Managed by the rotation's freeze and fence: never part of what a copy must carry over.
MANAGED_SETTINGS = frozenset({"default_transaction_read_only"})
# Set in every session so each row prints the same text on every server.
SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "search_path": "pg_catalog",
    "standard_conforming_strings": "on",
    # a table whose policies would hide rows from us fails instead of summing a subset
    "row_security": "off",
}
_DIGEST = "sha256:"
# First primary key column types whose order is the same on every server (text compared
# with COLLATE "C", which is code point order, as Python sorts).
_RANGE_TYPES = {
    "smallint": None,
    "integer": None,
    "bigint": None,
    "numeric": None,
    "uuid": None,
    "date": None,
    "timestamp without time zone": None,
    "timestamp with time zone": None,
    "text": "C",
    "character varying": "C",
}


_TABLES = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispopulated, pg_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND {USER_SCHEMA} AND {not_extension_member("pg_class", "c.oid")}
ORDER BY 2, 3
"""

# the first primary key column of each table, its type and the statistics' bounds
_KEYS = """
SELECT k.conrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       (SELECT s.histogram_bounds::text FROM pg_stats s
        WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
        LIMIT 1)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
WHERE k.contype = 'p' AND k.conrelid = ANY(%s)
"""

# Types whose hash function is exact (equal hash input means the same value and text form)
# and the same on every server. Rows made only of these were summed as the plain
# hash_record_extended of the row (method "record", PostgreSQL 14+): kept only to compare
# with fingerprints stored that way, as its sum misses about two in three swaps of a
# value between two rows; new fingerprints hash rows by value as "chained" (row_hash.py).
_RECORD_TYPES = (
    "'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'bool'::regtype, 'uuid'::regtype, "
    "'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype, 'oid'::regtype, "
    "'bytea'::regtype"
)
_BY_VALUE = f"""
SELECT c.oid FROM pg_class c
WHERE c.oid = ANY(%s) AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
      AND a.attnum > 0 AND NOT a.attisdropped)
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
      AND NOT a.attisdropped AND a.atttypid NOT IN ({_RECORD_TYPES}))
"""

_SEQUENCES = f"""
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND {USER_SCHEMA}
  AND {not_extension_member("pg_class", "c.oid")} ORDER BY 2, 3
"""

# kind -> query returning (name, definition); search_path is pg_catalog, so names and
# definitions print schema-qualified the same way on every server
_DEFINITIONS: dict[str, str] = {
    "relations": f"""
        SELECT c.oid::regclass::text,
               'kind ' || c.relkind::text || ' persistence ' || c.relpersistence::text
               || ' rls ' || c.relrowsecurity || ' force_rls ' || c.relforcerowsecurity
               || CASE WHEN c.relkind = 'm' THEN ' populated ' || c.relispopulated ELSE '' END
               || coalesce(' partition ' || pg_get_expr(c.relpartbound, c.oid), '')
               || coalesce(' partitioned by ' || pg_get_partkeydef(c.oid), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {USER_SCHEMA}
          AND {not_extension_member("pg_class", "c.oid")}""",
    "columns": f"""
        SELECT c.oid::regclass::text || '.' || quote_ident(a.attname),
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text
                       || ' AS ' || pg_get_expr(d.adbin, d.adrelid)
                       ELSE coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') END
               || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                       WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
               || CASE WHEN a.attcollation <> t.typcollation
                       THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
               || ' position ' || (SELECT count(*) FROM pg_attribute b
                   WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND NOT b.attisdropped
                     AND b.attnum <= a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND a.attnum > 0
          AND NOT a.attisdropped AND {USER_SCHEMA}
            AND {not_extension_member("pg_class", "c.oid")}""",
    # NOT NULL (contype 'n', PostgreSQL 18) is compared as the columns' nullability
    "constraints": f"""
        SELECT coalesce(nullif(k.conrelid, 0)::regclass::text, k.contypid::regtype::text)
               || ' ' || quote_ident(k.conname), pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
        WHERE k.contype <> 'n' AND {USER_SCHEMA}
          AND {not_extension_member("pg_constraint", "k.oid")}""",
    "indexes": f"""
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA} AND {not_extension_member("pg_class", "c.oid")}""",
    "views": f"""
        SELECT c.oid::regclass::text, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA}
          AND {not_extension_member("pg_class", "c.oid")}""",
    "functions": f"""
        SELECT p.oid::regprocedure::text,
               CASE WHEN p.prokind = 'a' THEN 'aggregate'
                    ELSE pg_get_functiondef(p.oid) END
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMA} AND {not_extension_member("pg_proc", "p.oid")}""",
    "triggers": f"""
        SELECT t.tgrelid::regclass::text || ' ' || quote_ident(t.tgname),
               pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {USER_SCHEMA}
          AND {not_extension_member("pg_class", "c.oid")}""",
    "policies": f"""
        SELECT p.polrelid::regclass::text || ' ' || quote_ident(p.polname),
               'cmd ' || p.polcmd::text || ' permissive ' || p.polpermissive
               || ' roles ' || coalesce((SELECT string_agg(
                   CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
                   FROM unnest(p.polroles) r), '')
               || coalesce(' using ' || pg_get_expr(p.polqual, p.polrelid), '')
               || coalesce(' check ' || pg_get_expr(p.polwithcheck, p.polrelid), '')
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA}""",
    "types": f"""
        SELECT t.oid::regtype::text,
               CASE t.typtype
                 WHEN 'e' THEN 'enum ' || (SELECT string_agg(quote_literal(e.enumlabel), ', '
                                           ORDER BY e.enumsortorder)
                                           FROM pg_enum e WHERE e.enumtypid = t.oid)
                 WHEN 'd' THEN 'domain ' || format_type(t.typbasetype, t.typtypmod)
                      || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                      || coalesce(' DEFAULT ' || t.typdefault, '')
                 ELSE 'type ' || t.typtype::text END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {USER_SCHEMA}
          AND {not_extension_member("pg_type", "t.oid")}""",
    "sequence_definitions": f"""
        SELECT s.seqrelid::regclass::text,
               format_type(s.seqtypid, NULL) || ' start ' || s.seqstart
               || ' increment ' || s.seqincrement || ' min ' || s.seqmin
               || ' max ' || s.seqmax || ' cache ' || s.seqcache || ' cycle ' || s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMA} AND {not_extension_member("pg_class", "c.oid")}""",
    "comments": f"""
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
        FROM pg_description d
        WHERE d.objoid >= 16384 AND d.classoid <> 'pg_extension'::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid
                          AND e.objid = d.objoid AND e.deptype = 'e')
          AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE d.classoid = 'pg_namespace'::regclass
                          AND n.oid = d.objoid AND NOT ({USER_SCHEMA}))""",
    "schemas": f"""
        SELECT quote_ident(n.nspname), 'schema' FROM pg_namespace n
        WHERE {USER_SCHEMA} AND {not_extension_member("pg_namespace", "n.oid")}""",
}

_SINGULAR = {
    "relations": "relation",
    "columns": "column",
    "constraints": "constraint",
    "indexes": "index",
    "views": "view",
    "functions": "function",
    "triggers": "trigger",
    "policies": "policy",
    "types": "type",
    "sequence_definitions": "sequence definition",
    "comments": "comment on",
    "schemas": "schema",
}

_SETTINGS = """
SELECT unnest(s.setconfig) FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase
WHERE d.datname = current_database() AND s.setrole = 0
"""

# GUCs whose value is a list of names that ALTER ... SET takes element by element
# (pg_dump's variable_is_guc_list_quote)
_LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


# -- the fingerprint --------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows of one key range of a table: `low <= key < high` (None: unbounded)."""

    low: str | None
    high: str | None
    rows: int = 0
    checksum: str = ""


@dataclass
class TableSum:
    """One table's rows: a count, a content checksum, and (large tables) per key range."""

    rows: int
    checksum: str = ""  # "" in counts mode
    key: str | None = None  # the key column of the ranges, with its type
    chunks: list[Chunk] = field(default_factory=list)
    method: str = "text"  # rows hashed by their text form, or by their values ("record")


@dataclass
class Fingerprint:
    """What a database holds, in one snapshot: enough to prove another one equal."""

    server_version: int
    mode: str = "content"
    tables: dict[str, TableSum] = field(default_factory=dict)
    sequences: dict[str, tuple[int, bool]] = field(default_factory=dict)
    definitions: dict[str, dict[str, str]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    large_objects: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def row_counts(self) -> dict[str, int]:
        return {name: t.rows for name, t in self.tables.items()}

    def to_dict(self, *, digests: bool = False) -> dict[str, Any]:
        """Plain JSON. `digests=True` stores definitions and settings as sha256 digests
        (for the journal: a function body or a setting may hold something secret-looking);
        such a fingerprint still compares, it just cannot show the text that differs."""

        def text(value: str) -> str:
            return digest(value) if digests else value

        return {
            "server_version": self.server_version,
            "mode": self.mode,
            "tables": {
                name: {
                    "rows": t.rows,
                    "checksum": t.checksum,
                    "key": t.key,
                    "chunks": [[c.low, c.high, c.rows, c.checksum] for c in t.chunks],
                    "method": t.method,
                }
                for name, t in self.tables.items()
            },
            "sequences": {k: [v, called] for k, (v, called) in self.sequences.items()},
            "definitions": {
                kind: {k: text(v) for k, v in defs.items()}
                for kind, defs in self.definitions.items()
            },
            "settings": {k: text(v) for k, v in self.settings.items()},
            "large_objects": self.large_objects,
            "extensions": self.extensions,
            "total_rows": self.total_rows,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            server_version=int(data["server_version"]),
            mode=str(data.get("mode", "content")),
            tables={
                name: TableSum(
                    rows=int(t["rows"]),
                    checksum=str(t.get("checksum") or ""),
                    key=t.get("key"),
                    chunks=[Chunk(lo, hi, int(n), str(s)) for lo, hi, n, s in t.get("chunks", [])],
                    method=str(t.get("method") or "text"),
                )
                for name, t in data["tables"].items()
            },
            sequences={k: (int(v), bool(c)) for k, (v, c) in data["sequences"].items()},
            definitions={k: dict(v) for k, v in data["definitions"].items()},
            settings=dict(data["settings"]),
            large_objects=dict(data["large_objects"]),
            extensions=dict(data["extensions"]),
            seconds=float(data.get("seconds") or 0.0),
        )


def digest(value: str) -> str:
    if value.startswith(_DIGEST):
        return value
    return _DIGEST + hashlib.sha256(value.encode()).hexdigest()


# -- taking one -------------------------------------------------------------------------


@dataclass
class _Job:
    table: str
    ident: sql.Composable
    size: int
    key: str | None = None  # the key column, quoted
    key_type: str | None = None
    collate: str | None = None
    chunks: list[Chunk] = field(default_factory=list)  # key ranges, summed in one scan
    method: str = "text"  # how rows are hashed: "text", "record", "columns" or "chained"
    row: sql.Composable | None = None  # "columns", "chained": the row's hash (row_hash.py)


def prepare_session(cur: psycopg2.extensions.cursor) -> None:
    """The settings that make row text forms comparable across servers."""
    for name, value in SESSION_SETTINGS.items():
        cur.execute("SELECT set_config(%s, %s, false)", (name, value))


@contextmanager
def _snapshot_session(
    url: PgURL,
    *,
    connect_timeout: float,
    statement_timeout: float | None,
    snapshot: str | None,
    held: psycopg2.extensions.connection | None = None,
) -> Iterator[psycopg2.extensions.connection]:
    """A read-only REPEATABLE READ transaction, in `snapshot` when given; on `held` (a
    session the caller keeps open, left as it was found) instead of a new one."""
    opened = (
        nullcontext(held)
        if held is not None
        else connection(
            url,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            autocommit=False,
        )
    )
    with opened as conn:
        autocommit = conn.autocommit
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        try:
            with conn.cursor() as cur:
                if snapshot:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                prepare_session(cur)
            yield conn
        except psycopg2.Error as exc:
            raise sql_error(url, exc) from None
        finally:
            conn.rollback()
            if held is not None:
                conn.set_session(isolation_level="DEFAULT", readonly="default")
                conn.autocommit = autocommit


def _bounds(histogram: str | None, collate: str | None, pieces: int) -> list[str]:
    """About `pieces - 1` cut points from pg_stats' histogram bounds, in comparison order."""
    if not histogram or pieces < 2:
        return []
    with_values = _parse_array(histogram)
    if collate == "C":
        with_values = sorted(set(with_values))
    else:
        seen: list[str] = []
        for v in with_values:
            if not seen or seen[-1] != v:
                seen.append(v)
        with_values = seen
    if len(with_values) < 3:
        return []
    step = max(1, len(with_values) // pieces)
    return with_values[step::step][: pieces - 1]


def _parse_array(text: str) -> list[str]:
    """Elements of a one-dimensional array's text form (quoted or not)."""
    body = text.strip()[1:-1]
    out: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|([^,]+)', body):
        if m.group(1) is not None:
            out.append(re.sub(r"\\(.)", r"\1", m.group(1)))
        else:
            out.append(m.group(2))
    return out


def _plan(
    cur: psycopg2.extensions.cursor, mode: str, jobs: int, like: Fingerprint | None
) -> list[_Job]:
    """One job per table (or per key range of a large table), largest first."""
    cur.execute(_TABLES)
    tables = cur.fetchall()
    cur.execute(_KEYS, ([t[0] for t in tables],))
    keys = {row[0]: row[1:] for row in cur.fetchall()}
    by_value: set[int] = set()
    hashes: dict[int, dict[str, sql.Composable]] = {}
    if mode == "content" and int(cur.connection.server_version) >= 140000:
        cur.execute(_BY_VALUE, ([t[0] for t in tables],))
        by_value = {row[0] for row in cur.fetchall()}
        hashes = row_hashes(cur, [t[0] for t in tables])
    jobs_out: list[_Job] = []
    for oid, schema, name, kind, populated, size in tables:
        label = qualified(schema, name)
        if kind == "m" and not populated:
            continue  # no rows to read; its state is in the definitions
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        given = like.tables.get(label) if like is not None else None
        by_method = hashes.get(oid, {})
        method = next((m for m in ("chained", "columns") if m in by_method), "text")
        if given is not None:
            # compare like with like: a fingerprint stored by an older version hashed rows
            # as text, as "record" (which a sum of could miss values swapped between rows)
            # or as "columns"
            able = {"text", "record" if oid in by_value else "", *by_method}
            method = given.method if given.method in able else "text"
        base = _Job(label, ident, int(size), method=method, row=by_method.get(method))
        chunks: list[Chunk] = []
        if mode == "content" and oid in keys and keys[oid][1] in _RANGE_TYPES:
            column, type_name, histogram = keys[oid]
            base.key = column
            base.key_type = type_name
            base.collate = _RANGE_TYPES[type_name]
            if given is not None:
                if given.key == f"{column} {type_name}" and given.chunks:
                    chunks = [Chunk(c.low, c.high) for c in given.chunks]
            elif size > CHUNK_BYTES:
                pieces = min(MAX_CHUNKS, max(jobs, -(-int(size) // CHUNK_BYTES)))
                cuts = _bounds(histogram, base.collate, pieces)
                if cuts:
                    edges: list[str | None] = [None, *cuts, None]
                    chunks = [Chunk(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
        base.chunks = chunks
        if not chunks:
            base.key = base.key_type = base.collate = None
        jobs_out.append(base)
    jobs_out.sort(key=lambda j: -j.size)
    return jobs_out


def _row_query(job: _Job, mode: str) -> sql.Composable:
    """(key range, rows, checksum) of a table, one row per key range, in one scan.

    ONLY: an inheritance parent's own rows (its children are summed on their own).
    """
    sums: sql.Composable
    if mode == "counts":
        sums = sql.SQL("count(*), ''")
    else:
        row_hash: sql.Composable
        if job.method in ("chained", "columns"):
            assert job.row is not None, "a job hashing by value knows its row hash"
            row_hash = job.row  # see row_hash.py
        elif job.method == "record":
            row_hash = sql.SQL("hash_record_extended(ROW(r.*), 0)")
        else:
            row_hash = sql.SQL("hashtextextended(ROW(r.*)::text, 0)")
        sums = sql.SQL("count(*), coalesce(sum({}), 0)::text").format(row_hash)
    if not job.chunks:
        return sql.SQL("SELECT 0, {} FROM ONLY {} AS r").format(sums, job.ident)
    assert job.key is not None and job.key_type is not None
    column = sql.SQL("r.{}").format(sql.Identifier(job.key))
    if job.collate:
        column = sql.SQL('{} COLLATE "C"').format(column)
    cuts = [c.low for c in job.chunks[1:]]
    thresholds = sql.SQL(", ").join(
        sql.SQL("CAST({} AS {})").format(sql.Literal(cut), sql.SQL(job.key_type)) for cut in cuts
    )
    # width_bucket: 0 below the first cut, i from the i-th cut on: the chunk's index
    return sql.SQL("SELECT width_bucket({}, ARRAY[{}]), {} FROM ONLY {} AS r GROUP BY 1").format(
        column, thresholds, sums, job.ident
    )


def key_ranges(
    url: str | PgURL, *, jobs: int = 2, mode: str = "content", connect_timeout: float = 30
) -> Fingerprint:
    """Only the key ranges large tables will be summed by (no sums): a plan to pass as
    `like` to both sides' take_fingerprint so their chunks correspond."""
    pg = parse_url(url)
    with (
        _snapshot_session(
            pg, connect_timeout=connect_timeout, statement_timeout=60, snapshot=None
        ) as conn,
        conn.cursor() as cur,
    ):
        work = _plan(cur, mode, jobs, None)
        fp = Fingerprint(server_version=int(conn.server_version), mode=mode)
    for job in work:
        fp.tables[job.table] = TableSum(
            rows=0,
            method=job.method,
            key=f"{job.key} {job.key_type}" if job.chunks else None,
            chunks=[Chunk(c.low, c.high) for c in job.chunks],
        )
    return fp


def whole_tables(plan: Fingerprint) -> Fingerprint:
    """`plan` with every table summed whole: one sum per table instead of one per key range.

    Grouping rows by key range costs as much as hashing them (7 M-row narrow table, one
    backend: 1.85 s by ranges, 0.83 s whole), so a comparison expected to agree sums whole
    tables and sums the key ranges of a table only once it differs (to name where)."""
    return Fingerprint(
        server_version=plan.server_version,
        mode=plan.mode,
        tables={name: TableSum(rows=0, method=table.method) for name, table in plan.tables.items()},
    )


def _read_catalog(cur: psycopg2.extensions.cursor, fp: Fingerprint) -> None:
    cur.execute(_SEQUENCES)
    names = [(schema, name) for _oid, schema, name in cur.fetchall()]
    for start in range(0, len(names), BATCH_TABLES):
        part = names[start : start + BATCH_TABLES]
        cur.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {}, last_value, is_called FROM {}.{}").format(
                    sql.Literal(i), sql.Identifier(schema), sql.Identifier(name)
                )
                for i, (schema, name) in enumerate(part)
            )
        )
        for i, value, called in cur.fetchall():
            schema, name = part[int(i)]
            fp.sequences[qualified(schema, name)] = (int(value), bool(called))
    for kind, query in _DEFINITIONS.items():
        cur.execute(query)
        fp.definitions[kind] = {
            str(k): _normalise(str(v), unqualify=kind == "views") for k, v in cur.fetchall()
        }
    fp.settings = _settings(cur)
    cur.execute("SELECT extname, extversion FROM pg_extension")
    fp.extensions = {str(k): str(v) for k, v in cur.fetchall()}
    if fp.mode == "content":
        cur.execute("SELECT oid::text, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid")
    else:
        cur.execute("SELECT oid::text, 'exists' FROM pg_largeobject_metadata ORDER BY oid")
    fp.large_objects = {str(k): str(v) for k, v in cur.fetchall()}


def _settings(cur: psycopg2.extensions.cursor) -> dict[str, str]:
    cur.execute(_SETTINGS)
    out = {}
    for (entry,) in cur.fetchall():
        name, _, value = str(entry).partition("=")
        if name.lower() not in MANAGED_SETTINGS:
            out[name] = value
    return out


def database_settings(url: str | PgURL, *, connect_timeout: float = 30) -> dict[str, str]:
    """The database's own settings (`ALTER DATABASE ... SET`), without the managed ones."""
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
        return _settings(cur)


_QUALIFIER = re.compile(r'(?<![\w$"])(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)\.(?=["A-Za-z_])')


def _normalise(text: str, *, unqualify: bool = False) -> str:
    """Whitespace runs as one space: deparsers of different majors indent differently.
    `unqualify`: without `name.` qualifiers, which newer majors leave out of view
    definitions where they are not needed (a view's columns and types are compared
    exactly on their own)."""
    if unqualify:
        text = _QUALIFIER.sub("", text)
    return " ".join(text.split())


def take_fingerprint(
    url: str | PgURL,
    *,
    snapshot: str | None = None,
    jobs: int = 2,
    mode: str = "content",
    like: Fingerprint | None = None,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
    cancel: threading.Event | None = None,
    known: dict[str, TableSum] | None = None,
    sessions: Sequence[psycopg2.extensions.connection] | None = None,
) -> Fingerprint:
    """The fingerprint of `url` in one snapshot (`snapshot`, or one this call exports).

    `jobs` sessions sum the tables in parallel. `like`: a fingerprint of another database
    to be compared with this one: its key ranges are reused so the chunks correspond.
    `cancel`: set it to stop early (raises FingerprintCancelled); a QueryCancel also stops
    the queries running at that moment.
    `known`: sums of tables already taken (TableSummer), used instead of reading them again.
    `sessions`: open sessions to use instead of new ones (a sealed database takes no new
    session, postgres/seal.py): the first holds the snapshot, the others sum the tables
    (the first alone when it is the only one); `jobs` is then their number. They are left
    open, outside any transaction.
    """
    if mode not in MODES:
        raise UsageError(f"unknown verification mode {mode!r}", hint='use "content" or "counts"')
    pg = parse_url(url)
    started = time.monotonic()
    held = list(sessions or [])
    with (
        _snapshot_session(
            pg,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            snapshot=snapshot,
            held=held[0] if held else None,
        ) as conn,
        _watched_by(cancel, conn),
    ):
        fp = Fingerprint(server_version=int(conn.server_version), mode=mode)
        with conn.cursor() as cur:
            shared = snapshot
            if shared is None and len(held) != 1:
                shared = export_snapshot(cur)
            work = _plan(cur, mode, max(jobs, len(held) - 1), like)
            present = {job.table for job in work}
            if known:
                work = [job for job in work if job.table not in known]
            alone = len(held) == 1  # the one session sums in its own transaction
            results = _sum_tables(
                pg,
                "" if alone else str(shared),
                work,
                mode,
                jobs,
                connect_timeout,
                statement_timeout,
                cancel,
                workers_on=[conn] if alone else held[1:] or None,
            )
            _read_catalog(cur, fp)
    for job, parts in zip(work, results, strict=True):
        fp.tables[job.table] = _table_sum(job, parts)
    for label, entry in (known or {}).items():
        if label in present:
            fp.tables[label] = entry
    fp.tables = dict(sorted(fp.tables.items()))
    fp.seconds = time.monotonic() - started
    return fp


def _table_sum(job: _Job, parts: list[tuple[int, int, str]]) -> TableSum:
    """A table's sum from its query's rows (one per key range that holds rows)."""
    if not job.chunks:
        _, rows, checksum = parts[0]
        return TableSum(rows=rows, checksum=checksum, method=job.method)
    found = {bucket: (rows, checksum) for bucket, rows, checksum in parts}
    chunks = [Chunk(c.low, c.high, *found.get(i, (0, "0"))) for i, c in enumerate(job.chunks)]
    return TableSum(
        rows=sum(c.rows for c in chunks),
        checksum=str(sum(int(c.checksum) for c in chunks)),
        key=f"{job.key} {job.key_type}",
        chunks=chunks,
        method=job.method,
    )


class TableSummer:
    """Sums tables of a database one at a time as they become final (a copy calls `add`
    as soon as a table is loaded), in one background session, so that verification after
    the copy is left with little to do. Key ranges and hashing follow `plan` (the source's),
    so the sums compare with the source's. Tables it could not sum are simply left out:
    take_fingerprint(known=...) sums them itself."""

    def __init__(
        self,
        url: str | PgURL,
        plan: Fingerprint,
        *,
        connect_timeout: float = 30,
        statement_timeout: float | None = 600,
    ) -> None:
        self.url = parse_url(url)
        self.plan = plan
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.done: dict[str, TableSum] = {}
        self._todo: queue.SimpleQueue[tuple[str, str, str] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="table-summer", daemon=True)
        self._thread.start()

    def add(self, schema: str, name: str) -> None:
        label = qualified(schema, name)
        if label in self.plan.tables:
            self._todo.put((label, schema, name))

    def _sum(self, cur: psycopg2.extensions.cursor, label: str, schema: str, name: str) -> None:
        entry = self.plan.tables[label]
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        job = _Job(label, ident, 0, method=entry.method)
        if job.method in ("chained", "columns"):
            cur.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                (schema, name),
            )
            found = cur.fetchone()
            by_method = row_hashes(cur, [int(found[0])]).get(int(found[0]), {}) if found else {}
            job.row = by_method.get(job.method)
            if job.row is None:
                return  # not the source's column types: the final pass compares it
        if entry.chunks:
            job.key, _, job.key_type = (entry.key or "").partition(" ")
            job.collate = _RANGE_TYPES.get(job.key_type)
            job.chunks = [Chunk(c.low, c.high) for c in entry.chunks]
        cur.execute(_row_query(job, self.plan.mode))
        parts = [(int(b), int(n), str(c)) for b, n, c in cur.fetchall()]
        self.done[label] = _table_sum(job, parts)

    def _run(self) -> None:
        try:
            with (
                connection(
                    self.url,
                    connect_timeout=self.connect_timeout,
                    statement_timeout=self.statement_timeout,
                ) as conn,
                conn.cursor() as cur,
            ):
                prepare_session(cur)
                while not self._stop.is_set():
                    item = self._todo.get()
                    if item is None:
                        return
                    try:
                        self._sum(cur, *item)
                    except psycopg2.Error as exc:
                        log.debug("left %s to the final pass: %s", item[0], exc)
        except Exception as exc:  # noqa: BLE001 - an optimisation only: the final pass sums all
            log.debug("table summer stopped: %s", exc)

    def finish(self) -> dict[str, TableSum]:
        """Wait for the tables added so far; returns their sums."""
        self._todo.put(None)
        self._thread.join()
        return dict(self.done)

    def stop(self) -> None:
        self._stop.set()
        self._todo.put(None)
        self._thread.join()


def _sum_tables(
    url: PgURL,
    snapshot: str,
    work: list[_Job],
    mode: str,
    jobs: int,
    connect_timeout: float,
    statement_timeout: float | None,
    cancel: threading.Event | None = None,
    workers_on: Sequence[psycopg2.extensions.connection] | None = None,
) -> list[list[tuple[int, int, str]]]:
    """Each job's (key range, rows, checksum) rows, by up to `jobs` sessions in `snapshot`
    (or by the sessions `workers_on`: open ones that import it, or the one already in it)."""
    results: list[list[tuple[int, int, str]]] = [[] for _ in work]
    if not work:
        return []
    # small tables go many to a query: one round trip instead of one per table
    todo: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    small: list[int] = []
    for i, job in enumerate(work):
        if not job.chunks and job.size < SMALL_TABLE_BYTES:
            small.append(i)
        else:
            todo.put([i])
    for start in range(0, len(small), BATCH_TABLES):
        todo.put(small[start : start + BATCH_TABLES])
    stop = cancel if cancel is not None else QueryCancel()  # a failure stops the others

    def batch_query(indexes: list[int]) -> sql.Composable:
        if len(indexes) == 1:
            return sql.SQL("SELECT {}, * FROM ({}) AS q").format(
                sql.Literal(indexes[0]), _row_query(work[indexes[0]], mode)
            )
        return sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, * FROM ({}) AS q").format(sql.Literal(i), _row_query(work[i], mode))
            for i in indexes
        )

    def session(held: Any) -> Any:
        if held is not None and not snapshot:
            return nullcontext(held)  # the session that holds the snapshot sums on its own
        return _snapshot_session(
            url,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            snapshot=snapshot,
            held=held,
        )

    def worker(held: Any = None) -> None:
        with (
            session(held) as conn,
            _watched_by(stop, conn),
            conn.cursor() as cur,
        ):
            while not stop.is_set():
                try:
                    indexes = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    cur.execute(batch_query(indexes))
                except psycopg2.Error as exc:
                    cancelled = stop.is_set()  # set before: this query was cancelled
                    stop.set()
                    if cancelled:
                        raise FingerprintCancelled("the fingerprint was cancelled") from None
                    raise sql_error(url, exc) from None
                for i, bucket, rows, checksum in cur.fetchall():
                    results[int(i)].append((int(bucket), int(rows), str(checksum)))

    held: list[Any] = list(workers_on) if workers_on else []
    workers = max(1, min(len(held) or jobs, len(work)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fingerprint") as pool:
        futures = [pool.submit(worker, held[i] if held else None) for i in range(workers)]
        errors = [exc for future in futures if (exc := future.exception()) is not None]
    # the real failure first: the other workers' queries were only cancelled because of it
    errors.sort(key=lambda exc: isinstance(exc, FingerprintCancelled))
    if errors:
        raise errors[0]
    if cancel is not None and cancel.is_set():
        raise FingerprintCancelled("the fingerprint was cancelled")
    return results


def _watched_by(cancel: threading.Event | None, conn: Any) -> Any:
    """`cancel.set()` stops `conn`'s running query when `cancel` is a QueryCancel."""
    if isinstance(cancel, QueryCancel):
        return cancel.watching(conn)
    return nullcontext()


class FingerprintCancelled(Exception):
    """take_fingerprint stopped early because its `cancel` event was set."""


# -- comparing two ----------------------------------------------------------------------


def _short(text: str, limit: int = 160) -> str:
    if text.startswith(_DIGEST):
        return "(stored as a digest)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range(key: str | None, chunk: Chunk) -> str:
    column = (key or "key").split(" ", 1)[0]
    if chunk.low is None and chunk.high is None:
        return "all rows"
    if chunk.low is None:
        return f"rows with {column} < {chunk.high}"
    if chunk.high is None:
        return f"rows with {column} >= {chunk.low}"
    return f"rows with {column} from {chunk.low} to before {chunk.high}"


def _same_text(a: str, b: str) -> bool:
    if a.startswith(_DIGEST) or b.startswith(_DIGEST):
        return digest(a) == digest(b)
    return a == b


def changed_tables(source: Fingerprint, target: Fingerprint) -> list[str]:
    """Tables whose rows differ (or exist on one side only)."""
    out = []
    content = source.mode == target.mode == "content"
    for name in sorted(set(source.tables) | set(target.tables)):
        s, t = source.tables.get(name), target.tables.get(name)
        if s is None or t is None or s.rows != t.rows or (content and s.checksum != t.checksum):
            out.append(name)
    return out


def compare_fingerprints(
    source: Fingerprint, target: Fingerprint, *, names: tuple[str, str] = ("source", "target")
) -> list[str]:
    """Every way `target` differs from `source`, one line each, naming where."""
    a, b = names
    diffs: list[str] = []
    content = source.mode == target.mode == "content"
    for name in sorted(set(source.tables) | set(target.tables)):
        s, t = source.tables.get(name), target.tables.get(name)
        if t is None:
            assert s is not None
            diffs.append(f"table {name}: missing on {b} ({s.rows} rows on {a})")
        elif s is None:
            diffs.append(f"table {name}: only on {b} ({t.rows} rows)")
        elif s.rows != t.rows or (content and s.checksum != t.checksum):
            where = ""
            if content and s.chunks and len(s.chunks) == len(t.chunks) and s.key == t.key:
                bad = [
                    _range(s.key, cs)
                    for cs, ct in zip(s.chunks, t.chunks, strict=True)
                    if (cs.rows, cs.checksum) != (ct.rows, ct.checksum)
                ]
                shown = "; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
                where = f" in {shown}" if bad else ""
            if s.rows != t.rows:
                diffs.append(f"table {name}: {s.rows} rows on {a}, {t.rows} on {b}{where}")
            else:
                diffs.append(f"table {name}: same {s.rows} rows but different contents{where}")
    for name in sorted(set(source.sequences) | set(target.sequences)):
        sv, tv = source.sequences.get(name), target.sequences.get(name)
        if tv is None:
            diffs.append(f"sequence {name}: missing on {b}")
        elif sv is None:
            diffs.append(f"sequence {name}: only on {b}")
        elif sv != tv:
            diffs.append(
                f"sequence {name}: last_value {sv[0]} (is_called {sv[1]}) on {a}, "
                f"{tv[0]} (is_called {tv[1]}) on {b}"
            )
    for kind in sorted(set(source.definitions) | set(target.definitions)):
        sd, td = source.definitions.get(kind, {}), target.definitions.get(kind, {})
        label = _SINGULAR.get(kind, kind)
        for name in sorted(set(sd) | set(td)):
            if name not in td:
                diffs.append(f"{label} {name}: missing on {b}")
            elif name not in sd:
                diffs.append(f"{label} {name}: only on {b}")
            elif not _same_text(sd[name], td[name]):
                diffs.append(
                    f"{label} {name}: {_short(sd[name])} on {a}, {_short(td[name])} on {b}"
                )
    for name in sorted(set(source.settings) | set(target.settings)):
        ss, ts = source.settings.get(name), target.settings.get(name)
        if ts is None:
            diffs.append(f"database setting {name}: missing on {b}")
        elif ss is None:
            diffs.append(f"database setting {name}: only on {b}")
        elif not _same_text(ss, ts):
            diffs.append(f"database setting {name}: {_short(ss)} on {a}, {_short(ts)} on {b}")
    for oid in sorted(set(source.large_objects) | set(target.large_objects), key=int):
        sl, tl = source.large_objects.get(oid), target.large_objects.get(oid)
        if tl is None:
            diffs.append(f"large object {oid}: missing on {b}")
        elif sl is None:
            diffs.append(f"large object {oid}: only on {b}")
        elif content and sl != tl:
            diffs.append(f"large object {oid}: contents differ")
    same_major = source.server_version // 10000 == target.server_version // 10000
    for ext in sorted(source.extensions):
        if ext not in target.extensions:
            diffs.append(f"extension {ext}: missing on {b}")
        elif same_major and source.extensions[ext] != target.extensions[ext]:
            diffs.append(
                f"extension {ext}: version {source.extensions[ext]} on {a}, "
                f"{target.extensions[ext]} on {b}"
            )
    return diffs


def drift(
    url: str | PgURL,
    stored: Fingerprint,
    *,
    jobs: int = 2,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
    sessions: Sequence[psycopg2.extensions.connection] | None = None,
) -> tuple[list[str], list[str]]:
    """How the database at `url` now differs from `stored` (a fingerprint of it taken
    earlier, e.g. in a copy's snapshot): (differences, tables whose rows changed).
    `sessions`: open sessions to read it through (see take_fingerprint)."""
    now = fingerprint_like(
        url,
        stored,
        jobs=jobs,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
        sessions=sessions,
    )
    names = ("the snapshot", "the database now")
    return compare_fingerprints(stored, now, names=names), changed_tables(stored, now)


def fingerprint_like(
    url: str | PgURL,
    stored: Fingerprint,
    *,
    jobs: int = 2,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
    sessions: Sequence[psycopg2.extensions.connection] | None = None,
) -> Fingerprint:
    """The fingerprint of `url` to compare with `stored`: every table summed whole (a
    table's sum is the sum of its key ranges' sums), and only a table that differs summed
    again by `stored`'s key ranges, so that the comparison names where. The first reading
    stands (sequences, definitions, ...): the second only lends its ranged sums to tables
    it still finds different (a change undone in between leaves the whole sum)."""
    options: dict[str, Any] = {
        "jobs": jobs,
        "mode": stored.mode,
        "connect_timeout": connect_timeout,
        "statement_timeout": statement_timeout,
        "sessions": sessions,
    }
    now = take_fingerprint(url, like=whole_tables(stored), **options)
    changed = set(changed_tables(stored, now))
    again = {name for name in changed if name in stored.tables and stored.tables[name].chunks}
    if not again:
        return now
    known = {name: table for name, table in now.tables.items() if name not in again}
    ranged = take_fingerprint(url, like=stored, known=known, **options)
    return with_ranged_sums(now, ranged, again & set(changed_tables(stored, ranged)))


def with_ranged_sums(first: Fingerprint, ranged: Fingerprint, tables: set[str]) -> Fingerprint:
    """`first` (a reading by whole tables) with the sums of `tables` taken from `ranged` (a
    later reading by key range); the caller names only tables the later reading still finds
    different, so nothing the first reading found is lost."""
    merged = replace(first, tables=dict(first.tables))
    for name in tables:
        table = ranged.tables.get(name)
        if table is not None and name in first.tables:
            merged.tables[name] = table
    return merged


# -- carrying database settings over ----------------------------------------------------


def _split_list(value: str) -> list[str]:
    """A list setting's stored text (`"$user", public`) as its elements."""
    out = []
    for m in re.finditer(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|$)', value):
        if m.group(1) is not None:
            out.append(m.group(1).replace('""', '"'))
        elif m.group(2):
            out.append(m.group(2))
    return out


def apply_settings(
    url: str | PgURL, settings: dict[str, str], *, connect_timeout: float = 30
) -> list[str]:
    """`ALTER DATABASE <url's database> SET` each setting (what pg_dump emits only with
    --create); returns the names set. Digested (journal) values cannot be applied."""
    pg = parse_url(url)
    done: list[str] = []
    if not settings:
        return done
    with connection(pg, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        for name, value in sorted(settings.items()):
            if name.lower() in MANAGED_SETTINGS:
                continue
            if value.startswith(_DIGEST):
                raise UsageError(
                    f"database setting {name} is only known as a digest",
                    hint="restore from the backup manifest, which holds the values",
                )
            values = _split_list(value) if name.lower() in _LIST_SETTINGS else [value]
            stmt = sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(pg.dbname),
                sql.Identifier(*name.split(".")),
                sql.SQL(", ").join(sql.Literal(v) for v in values),
            )
            try:
                cur.execute(stmt)
            except psycopg2.Error as exc:
                raise sql_error(pg, exc) from None
            done.append(name)
    return done


__all__ = [
    "Chunk",
    "Fingerprint",
    "TableSum",
    "apply_settings",
    "changed_tables",
    "compare_fingerprints",
    "database_settings",
    "drift",
    "fingerprint_like",
    "take_fingerprint",
    "whole_tables",
    "with_ranged_sums",
]
