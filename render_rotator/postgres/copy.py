"""The fast copy: one snapshot, schema first, data streamed by parallel workers, then indexes.

`copy_database(source_url, target_url, jobs=N)` copies a live database into another one
while both exist, without an intermediate file:

1. A REPEATABLE READ session on the source exports its snapshot and holds ACCESS SHARE
   locks on every table until the end, so every worker sees the very same data.
2. The schema (`pg_dump --section=pre-data --section=post-data`, a small custom archive
   taken in that snapshot) is restored up to the data (`--section=pre-data`, one
   transaction, `--no-owner --no-privileges`, superuser-only harmless entries skipped).
3. Table data flows source -> target through `psql` pairs: `COPY ... TO STDOUT` in the
   snapshot on one side, `COPY ... FROM STDIN` on the other, joined by OS pipes that this
   process only splices (no row ever becomes a Python object; memory stays constant).
   Largest tables first, binary format whenever every column type allows it, and each
   whole table in one `TRUNCATE` + `COPY FREEZE` transaction (rows arrive frozen and
   all-visible: no hint-bit rewrite during index builds, no freeze vacuum later). A table
   larger than its fair share of the work is split into ctid block ranges (TID range scans,
   PostgreSQL 14+) so that one table cannot serialize the copy. Small tables travel up to
   50 to a session pair and one transaction, as a psql script of inline COPY blocks, so
   hundreds of them cost a handful of connections.
4. A dependency-driven scheduler keeps the `jobs` workers busy: as soon as a table is
   loaded its indexes and primary/unique keys are built (`pg_restore -L` of those TOC
   entries; GIN builds, the longest, start first), then it is ANALYZEd, and once both ends
   of a foreign key are ready the key is validated, all while other tables still stream.
5. The remaining post-data (triggers, materialized view data, partitioned parents'
   indexes, ...) is restored with `pg_restore -j N`, sequences are set from the snapshot,
   large objects are copied by `pg_dump --data-only --blobs` in the snapshot, and the
   parents and materialized views are ANALYZEd.

Timeouts: `command_timeout` is a wall-clock limit on the whole copy (and so on every child
process), `connect_timeout` applies to every connection, every SQL session runs with a
`statement_timeout`. Passwords reach the tools through a 0600 passfile only. The first
failing worker stops the others (their process groups are killed) and raises `CopyError`
naming the table and the cause; the target then holds a partial copy, which the next run
refuses to overwrite unless `clean=True`, which drops every user object first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from render_rotator.errors import (
    CommandTimeoutError,
    CopyError,
    DatabaseError,
    ToolError,
    UsageError,
    VerificationError,
)
from render_rotator.postgres import archive
from render_rotator.postgres.binaries import (
    PgBin,
    rejection,
    resolve_client,
    server_major_from_num,
    url_needs_tls,
)
from render_rotator.postgres.connect import connect, connection, sql_error
from render_rotator.postgres.fingerprint import (
    Fingerprint,
    TableSummer,
    apply_settings,
    database_settings,
    key_ranges,
    take_fingerprint,
)
from render_rotator.postgres.inventory import VerificationReport, compare, qualified
from render_rotator.postgres.runner import (
    describe_exit,
    kill_group,
    last_error_line,
    read_stderr,
    run_tool,
    spawn,
)
from render_rotator.postgres.tuning import (
    analyze_parallel,
    tool_dsn,
    with_application_name,
    with_settings,
)
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

APPLICATION_NAME = "render-rotator-copy"
# Tables below this size travel many to one session pair (process + connection cost
# dominates their copy); their indexes are built by the final parallel pg_restore.
SMALL_TABLE_BYTES = 8 << 20
# Small enough that batches fill the schedule's gaps, big enough to amortize two sessions.
BATCH_BYTES = 16 << 20
BATCH_TABLES = 50
# No ctid range is cut smaller than this: each costs two connections and a scan start.
MIN_CHUNK_BYTES = 32 << 20
PIPE_BYTES = 1 << 20
PROGRESS_INTERVAL = 0.5
FIRST_NORMAL_OID = 16384
_F_SETPIPE_SZ = 1031
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f-]+$")
_COPY_TAG = re.compile(rb"^COPY (\d+)$", re.MULTILINE)
_TOC_LINE = re.compile(r"^(\d+);\s+(\d+)\s+(\d+)\s+(.*)$")
_PG_CLASS = 1259  # catalog OIDs in pg_restore --list lines
_PG_CONSTRAINT = 2606
_PG_LARGEOBJECT = 2613

# Settings every data session gets: text-format COPY must parse what it printed, and an
# RLS-filtered COPY must fail rather than silently copy a subset.
_STREAM_SETTINGS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "standard_conforming_strings": "on",
    # as pg_dump and pg_restore do: a database's own search_path (ALTER DATABASE ... SET)
    # would print reg* values unqualified on one side and resolve them elsewhere on the other
    "search_path": "pg_catalog",
}


# -- results and progress -----------------------------------------------------------------


@dataclass(frozen=True)
class CopyProgress:
    """A progress report, sent from worker threads (keep the callback quick)."""

    phase: str  # "schema", "data", "post-data", "analyze", "verify", "done"
    event: str  # "phase": a phase began; "bytes": data is streaming; "table": a table is in
    table: str | None  # the table a data report is about
    bytes_done: int  # COPY stream bytes moved so far, whole copy
    bytes_total: int  # on-disk size of all tables: an estimate of the stream's size
    rows_done: int  # rows loaded by finished chunks
    tables_done: int
    tables_total: int


ProgressCallback = Callable[[CopyProgress], None]


@dataclass
class CopyResult:
    """What a copy moved and where the time went."""

    tables: int
    rows: int
    bytes: int
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    chunks: int = 0  # COPY streams run: one per table, one per ctid range of a split table
    sequences: int = 0
    large_objects: int = 0
    early_indexes: int = 0
    skipped: list[str] = field(default_factory=list)
    verification: VerificationReport | None = None
    timeline: list[TaskTiming] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds else 0.0
        return (
            f"copied {self.tables} tables, {self.rows} rows, {self.bytes / 1e6:.1f} MB "
            f"in {self.seconds:.1f}s ({rate:.1f} MB/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": self.tables,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds.items()},
            "chunks": self.chunks,
            "sequences": self.sequences,
            "large_objects": self.large_objects,
            "early_indexes": self.early_indexes,
            "skipped": self.skipped,
            "verification": self.verification.to_dict() if self.verification else None,
            "critical_path": [t.to_dict() for t in critical_path(self.timeline)],
        }


# -- the source's catalog, read in the snapshot ---------------------------------------------


def quote_ident(name: str) -> str:
    """Always-quoted identifier: correct for every name, whatever its case or characters."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_USER_SCHEMA = """n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"""
_NOT_EXTENSION_MEMBER = """NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cat}::regclass
    AND d.objid = {oid} AND d.deptype = 'e')"""

_TABLES_SQL = f"""
    SELECT c.oid, n.nspname, c.relname, pg_table_size(c.oid),
           pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.relhassubclass
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION_MEMBER.format(cat="'pg_class'", oid="c.oid")}
"""
_SEQUENCES_SQL = f"""
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND {_USER_SCHEMA}
      AND {_NOT_EXTENSION_MEMBER.format(cat="'pg_class'", oid="c.oid")}
    ORDER BY 1, 2
"""
_TYPES_SQL = """
    SELECT oid, typtype, typbasetype, typelem, typcategory,
           typsend::oid <> 0 AND typreceive::oid <> 0
    FROM pg_type
"""
_INDEXES_SQL = """
    SELECT i.indexrelid, i.indrelid, pg_relation_size(i.indexrelid), am.amname
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE i.indrelid = ANY(%s)
"""
_CONSTRAINTS_SQL = """
    SELECT oid, conrelid, contype, conindid, confrelid FROM pg_constraint
    WHERE conrelid = ANY(%s)
"""


@dataclass
class SourceTable:
    """A table whose rows we copy (plain tables and leaf partitions)."""

    oid: int
    schema: str
    name: str
    size: int
    blocks: int
    has_children: bool = False  # an inheritance parent: ANALYZE once its children are loaded
    columns: list[str] = field(default_factory=list)
    binary: bool = True
    index_cost: int = 0

    @property
    def ident(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def label(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def column_list(self) -> str:
        return ", ".join(quote_ident(c) for c in self.columns)

    @property
    def column_spec(self) -> str:
        """`` (a, b)`` for a COPY statement; nothing for a table without columns (which
        COPY takes only without a list)."""
        return f" ({self.column_list})" if self.columns else ""


@dataclass(frozen=True)
class _TypeInfo:
    typtype: str
    basetype: int
    elem: int
    category: str
    has_binary_io: bool


# regproc, regprocedure, regoper, regoperator, regclass, regtype, regconfig, regdictionary,
# regnamespace, regrole, regcollation: their binary form is the raw OID, which names another
# object (or none) in the target; their text form is the object's name.
_REG_TYPES = frozenset({24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191})


def _binary_safe(types: dict[int, _TypeInfo], oid: int) -> bool:
    """Binary COPY carries type OIDs inside arrays and composites: only built-in types
    (same OIDs on every server) with binary send/receive functions are safe, and of those
    not the reg* types, whose binary value is an OID."""
    seen = 0
    while oid in types and types[oid].typtype == "d" and seen < 20:
        oid, seen = types[oid].basetype, seen + 1
    info = types.get(oid)
    if info is None or oid >= FIRST_NORMAL_OID or not info.has_binary_io or oid in _REG_TYPES:
        return False
    if info.category == "A" and info.elem:
        return _binary_safe(types, info.elem)
    return True


@dataclass(frozen=True)
class _Constraint:
    table: int
    contype: str  # p, u, x, f, c, t
    index: int  # the supporting index (for f: the referenced table's unique index)
    referenced: int  # for foreign keys: the referenced table


@dataclass
class _Plan:
    tables: list[SourceTable]
    sequences: list[tuple[str, str]]
    large_objects: int
    encoding: str
    server_num: int
    index_table: dict[int, int]  # index oid -> table oid
    index_cost: dict[int, int]  # index oid -> weighted size
    constraints: dict[int, _Constraint]


def _read_plan(conn: psycopg2.extensions.connection) -> _Plan:
    """Everything the copy needs to know about the source, read inside the snapshot."""
    server_num = int(conn.server_version)
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL)
        tables = {
            int(r[0]): SourceTable(
                int(r[0]), r[1], r[2], int(r[3] or 0), int(r[4] or 0), has_children=bool(r[5])
            )
            for r in cur.fetchall()
        }
        oids = list(tables)
        generated = "AND a.attgenerated = ''" if server_num >= 120000 else ""
        cur.execute(
            f"""SELECT a.attrelid, a.attname, a.atttypid FROM pg_attribute a
                WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped {generated}
                ORDER BY a.attrelid, a.attnum""",
            (oids,),
        )
        column_types: dict[int, list[int]] = {}
        for relid, attname, typid in cur.fetchall():
            tables[int(relid)].columns.append(attname)
            column_types.setdefault(int(relid), []).append(int(typid))
        cur.execute(_TYPES_SQL)
        types = {
            int(r[0]): _TypeInfo(r[1], int(r[2]), int(r[3]), r[4], bool(r[5]))
            for r in cur.fetchall()
        }
        for oid, table in tables.items():
            table.binary = all(_binary_safe(types, t) for t in column_types.get(oid, []))
        cur.execute(_INDEXES_SQL, (oids,))
        index_table: dict[int, int] = {}
        index_cost: dict[int, int] = {}
        for indexrelid, indrelid, size, amname in cur.fetchall():
            # GIN and GiST builds cost several times a btree build of the same size.
            weight = 4 if amname in ("gin", "gist", "spgist") else 1
            index_table[int(indexrelid)] = int(indrelid)
            index_cost[int(indexrelid)] = int(size or 0) * weight
            tables[int(indrelid)].index_cost += int(size or 0) * weight
        cur.execute(_CONSTRAINTS_SQL, (oids,))
        constraints = {
            int(r[0]): _Constraint(int(r[1]), str(r[2]), int(r[3] or 0), int(r[4] or 0))
            for r in cur.fetchall()
        }
        cur.execute(_SEQUENCES_SQL)
        sequences = [(str(s), str(n)) for s, n in cur.fetchall()]
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        row = cur.fetchone()
        large_objects = int(row[0]) if row else 0
        cur.execute("SHOW server_encoding")
        row = cur.fetchone()
        encoding = str(row[0]) if row else "UTF8"
    ordered = _load_order(tables, constraints)
    return _Plan(
        tables=ordered,
        sequences=sequences,
        large_objects=large_objects,
        encoding=encoding,
        server_num=server_num,
        index_table=index_table,
        index_cost=index_cost,
        constraints=constraints,
    )


def _load_order(
    tables: dict[int, SourceTable], constraints: dict[int, _Constraint]
) -> list[SourceTable]:
    """Costliest tables first (rows plus weighted index builds), except that a table
    referenced by a foreign key follows right after the costliest table referencing it:
    the key can only be validated once both are in, and must not be left for the end."""
    cost = {oid: float(t.size + t.index_cost) for oid, t in tables.items()}
    edges = [
        (c.table, c.referenced)
        for c in constraints.values()
        if c.contype == "f"
        and c.table in tables
        and c.referenced in tables
        and c.table != c.referenced
    ]
    for _round in range(len(tables)):  # a chain lifts at most one link per round
        changed = False
        for referencing, referenced in edges:
            lifted = cost[referencing] - 1.0
            if cost[referenced] < lifted:
                cost[referenced] = lifted
                changed = True
        if not changed:
            break
    return sorted(tables.values(), key=lambda t: (-cost[t.oid], t.schema, t.name))


def _read_sequences(
    conn: psycopg2.extensions.connection, sequences: Sequence[tuple[str, str]]
) -> list[tuple[str, int, bool]]:
    """(quoted name, last_value, is_called) of each sequence, as the snapshot sees it."""
    values: list[tuple[str, int, bool]] = []
    with conn.cursor() as cur:
        for start in range(0, len(sequences), 200):
            part = sequences[start : start + 200]
            query = " UNION ALL ".join(
                f"SELECT {i}, last_value, is_called FROM {quote_ident(s)}.{quote_ident(n)}"
                for i, (s, n) in enumerate(part)
            )
            cur.execute(query)
            for i, last_value, is_called in sorted(cur.fetchall()):
                s, n = part[int(i)]
                values.append((f"{quote_ident(s)}.{quote_ident(n)}", int(last_value), is_called))
    return values


# -- the target: empty, or cleaned on request ------------------------------------------------

_TARGET_OBJECTS_SQL = f"""
WITH ns AS (
    SELECT n.oid, n.nspname FROM pg_namespace n WHERE {_USER_SCHEMA}
), objs(classid, objid, extra) AS (
    SELECT 'pg_namespace'::regclass, n.oid, '' FROM ns n WHERE n.nspname <> 'public'
    UNION ALL SELECT 'pg_class'::regclass, c.oid, c.relkind::text FROM pg_class c
        WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind IN ('r','p','v','m','S','f','c')
    UNION ALL SELECT 'pg_proc'::regclass, p.oid, '' FROM pg_proc p
        WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_type'::regclass, t.oid, t.typtype::text FROM pg_type t
        WHERE t.typnamespace IN (SELECT oid FROM ns) AND t.typtype IN ('b','d','e','r')
          AND t.typcategory <> 'A' AND t.typrelid = 0
    UNION ALL SELECT 'pg_collation'::regclass, o.oid, '' FROM pg_collation o
        WHERE o.collnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_conversion'::regclass, o.oid, '' FROM pg_conversion o
        WHERE o.connamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_operator'::regclass, o.oid, '' FROM pg_operator o
        WHERE o.oprnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_opfamily'::regclass, o.oid, '' FROM pg_opfamily o
        WHERE o.opfnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_ts_config'::regclass, o.oid, '' FROM pg_ts_config o
        WHERE o.cfgnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_ts_dict'::regclass, o.oid, '' FROM pg_ts_dict o
        WHERE o.dictnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_statistic_ext'::regclass, o.oid, '' FROM pg_statistic_ext o
        WHERE o.stxnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_publication'::regclass, o.oid, '' FROM pg_publication o
    UNION ALL SELECT 'pg_foreign_server'::regclass, o.oid, '' FROM pg_foreign_server o
    UNION ALL SELECT 'pg_event_trigger'::regclass, o.oid, '' FROM pg_event_trigger o
)
SELECT x.type, x.identity, o.extra
FROM objs o, LATERAL pg_identify_object(o.classid, o.objid, 0) x
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid
                  AND d.objsubid = 0 AND d.deptype IN ('e', 'i'))
ORDER BY o.classid <> 'pg_namespace'::regclass, o.classid <> 'pg_class'::regclass, 2
"""

_DROP_KEYWORDS = {
    "schema": "SCHEMA",
    "table": "TABLE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "foreign table": "FOREIGN TABLE",
    "composite type": "TYPE",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "type": "TYPE",
    "collation": "COLLATION",
    "conversion": "CONVERSION",
    "operator": "OPERATOR",
    "operator family": "OPERATOR FAMILY",
    "text search configuration": "TEXT SEARCH CONFIGURATION",
    "text search dictionary": "TEXT SEARCH DICTIONARY",
    "statistics object": "STATISTICS",
    "publication": "PUBLICATION",
    "server": "SERVER",
    "event trigger": "EVENT TRIGGER",
}


def target_objects(conn: psycopg2.extensions.connection) -> list[str]:
    """Every user object in the target ("table public.t", "large object 16400", ...)."""
    with conn.cursor() as cur:
        cur.execute(_TARGET_OBJECTS_SQL)
        found = [f"{kind} {identity}" for kind, identity, _extra in cur.fetchall()]
        cur.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY 1 LIMIT 5")
        found += [f"large object {r[0]}" for r in cur.fetchall()]
    return found


def clean_target(conn: psycopg2.extensions.connection) -> int:
    """Drop every user object (schemas, their contents, large objects); returns how many.

    Used before a re-run after a failed copy. Extensions stay: the schema restore recreates
    them only if missing.
    """
    dropped = 0
    with conn.cursor() as cur:
        for _round in range(3):  # CASCADE may already have taken an object: IF EXISTS
            cur.execute(_TARGET_OBJECTS_SQL)
            rows = cur.fetchall()
            if not rows:
                break
            for kind, identity, extra in rows:
                keyword = "DOMAIN" if kind == "type" and extra == "d" else _DROP_KEYWORDS.get(kind)
                if keyword is None:
                    continue
                cur.execute(f"DROP {keyword} IF EXISTS {identity} CASCADE")
                dropped += 1
        cur.execute("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata")
        row = cur.fetchone()
        dropped += int(row[0]) if row else 0
    return dropped


# -- child processes: registry, pipes, the byte relay ---------------------------------------


class _Processes:
    """Every tool process the copy runs, so that a failure can stop them all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def track(self, *procs: subprocess.Popen[bytes]) -> Iterator[None]:
        with self._lock:
            if self.stopping.is_set():
                for proc in procs:
                    kill_group(proc, grace=0.5)
                raise _Stopped()
            self._procs.update(procs)
        try:
            yield
        finally:
            with self._lock:
                self._procs.difference_update(procs)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping.set()
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc, grace=0.5)


class _Stopped(Exception):
    """Raised inside a worker when the copy is being stopped because of another failure."""


def _stream_failure(
    source: tuple[str, int, str], target: tuple[str, int, str], relay_error: OSError | None
) -> str:
    """Name the real cause: a source that failed on its own, else the target's error.

    When the target dies the source only sees a broken pipe, and when the source dies the
    target only sees truncated input; both sides are named when both failed on their own.
    """
    (src_prog, src_code, src_text), (dst_prog, dst_code, dst_text) = source, target
    src_echo = src_code == -signal.SIGPIPE or any(
        p in src_text.lower() for p in ("broken pipe", "could not write", "could not send")
    )
    causes = []
    if src_code != 0 and not src_echo:
        causes.append(
            f"{describe_exit(src_prog + ' (source)', src_code)}: {last_error_line(src_text)}"
        )
    if dst_code != 0:
        causes.append(
            f"{describe_exit(dst_prog + ' (target)', dst_code)}: {last_error_line(dst_text)}"
        )
    if not causes and src_code != 0:
        causes.append(
            f"{describe_exit(src_prog + ' (source)', src_code)}: {last_error_line(src_text)}"
        )
    if not causes:
        causes.append(f"the stream between source and target broke: {relay_error}")
    return "; ".join(causes)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_BYTES)
    return r, w


def _relay(read_fd: int, write_fd: int, on_bytes: Callable[[int], None]) -> int:
    """Move bytes from one pipe to the other until EOF; splice keeps them in the kernel."""
    total = 0
    splice = getattr(os, "splice", None)
    while True:
        if splice is not None:
            try:
                moved = splice(read_fd, write_fd, PIPE_BYTES)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS):
                    splice = None
                    continue
                raise
        else:
            data = os.read(read_fd, PIPE_BYTES)
            moved = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view) :]
        if moved == 0:
            return total
        total += moved
        on_bytes(moved)


@dataclass
class _StreamOutcome:
    rows: list[int]
    bytes: int


# -- tasks ---------------------------------------------------------------------------------


@dataclass
class _Task:
    """A unit of work for the scheduler. `run` returns True when it finished its table."""

    kind: str  # "data", "batch", "index", "batch-index", "analyze", "foreign-key", "blobs"...
    label: str
    priority: float
    run: Callable[[], bool]
    # The tables the task works on. An exclusive task (ALTER TABLE ... ADD PRIMARY KEY or
    # FOREIGN KEY lock out other sessions) never runs beside another task on the same
    # table: it would only wait, holding a worker, or deadlock.
    locks: tuple[int, ...] = ()
    exclusive: bool = False
    tables: tuple[SourceTable, ...] = ()
    seq: int = 0
    parent: str | None = None  # the task whose completion made this one ready
    ready_at: float = 0.0
    cost: int = 0  # index builds: weighted source index size, to find the long pole
    parallel: int = 0  # server-side parallel workers granted to this build when picked
    blocked_by: str | None = None


@dataclass(frozen=True)
class TaskTiming:
    """When a copy task became ready, started and ended (seconds from the copy's start)."""

    kind: str
    label: str
    ready: float
    began: float
    ended: float
    parent: str | None
    parallel: int = 0  # server-side parallel workers the task was granted
    blocked_by: str | None = None  # the task whose end let it start, when it had to wait

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "ready": round(self.ready, 3),
            "began": round(self.began, 3),
            "ended": round(self.ended, 3),
            "parent": self.parent,
            "parallel": self.parallel,
            "blocked_by": self.blocked_by,
        }


def critical_path(timeline: Sequence[TaskTiming]) -> list[TaskTiming]:
    """The chain of tasks ending with the last to finish, each made ready by the one before.

    Between two links, `began - ready` is time spent waiting for a free worker; the rest of
    a link is its own work: where the copy's time went.
    """
    if not timeline:
        return []
    by_label = {t.label: t for t in timeline}
    chain = [max(timeline, key=lambda t: t.ended)]
    while chain[-1].parent is not None and chain[-1].parent in by_label:
        chain.append(by_label[chain[-1].parent])
    return list(reversed(chain))


@dataclass
class _Chunk:
    table: SourceTable
    part: int
    parts: int
    low_block: int | None
    high_block: int | None

    @property
    def label(self) -> str:
        if self.parts == 1:
            return self.table.label
        return f"{self.table.label} (part {self.part}/{self.parts})"


def plan_chunks(
    tables: Sequence[SourceTable],
    *,
    jobs: int,
    split_bytes: int | None,
    ctid_ranges: bool,
) -> tuple[list[_Chunk], list[list[SourceTable]]]:
    """Big tables as one or more chunks, small ones grouped into batches.

    A table is split when it is larger than its fair share of the whole copy (so one
    table cannot serialize it) or than `split_bytes` when given; pieces are at least
    MIN_CHUNK_BYTES unless `split_bytes` asks for smaller ones.
    """
    total = sum(t.size for t in tables)
    fair_share = total / max(1, jobs)
    piece = max(MIN_CHUNK_BYTES, total / max(1, 2 * jobs))
    chunks: list[_Chunk] = []
    batches: list[list[SourceTable]] = []
    batch: list[SourceTable] = []
    batch_bytes = 0
    for table in tables:
        if table.size < SMALL_TABLE_BYTES and (split_bytes is None or table.size < split_bytes):
            batch.append(table)
            batch_bytes += table.size
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_TABLES:
                batches.append(batch)
                batch, batch_bytes = [], 0
            continue
        parts = 1
        if ctid_ranges and table.blocks > 1 and jobs > 1:
            if split_bytes is not None:
                if table.size > split_bytes:
                    parts = -(-table.size // split_bytes)
            elif table.size > fair_share and table.size > 2 * MIN_CHUNK_BYTES:
                parts = round(table.size / piece)
            parts = max(1, min(parts, table.blocks, 8 * jobs))
        if parts == 1:
            chunks.append(_Chunk(table, 1, 1, None, None))
            continue
        step = table.blocks / parts
        bounds = [round(i * step) for i in range(parts)] + [None]
        for i in range(parts):
            chunks.append(_Chunk(table, i + 1, parts, bounds[i] if i else None, bounds[i + 1]))
    if batch:
        batches.append(batch)
    return chunks, batches


@dataclass
class _TocEntry:
    line: str
    dump_id: int
    catalog: int
    oid: int
    desc: str


def _parse_toc(toc: str) -> list[_TocEntry]:
    entries = []
    for line in toc.splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append(
                _TocEntry(
                    line,
                    int(match.group(1)),
                    int(match.group(2)),
                    int(match.group(3)),
                    match.group(4),
                )
            )
    return entries


# -- the copy ------------------------------------------------------------------------------


class _Copier:
    """One run of copy_database: holds the shared state its worker threads use."""

    def __init__(
        self,
        source: PgURL,
        target: PgURL,
        *,
        client: PgBin,
        jobs: int,
        connect_timeout: float,
        command_timeout: float,
        maintenance_work_mem: str | None,
        split_bytes: int | None,
        progress: ProgressCallback | None,
        workdir: Path,
    ) -> None:
        self.source = with_application_name(source, APPLICATION_NAME)
        self.target = with_application_name(target, APPLICATION_NAME)
        self.client = client
        self.pg_bin: str | Path | None = None
        self.needs_tls = False
        self.jobs = jobs
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.maintenance_work_mem = maintenance_work_mem
        self.split_bytes = split_bytes
        self.progress_cb = progress
        self.workdir = workdir
        self.started = time.monotonic()
        self.timeline: list[TaskTiming] = []  # list.append is atomic: workers share it
        self.deadline = self.started + command_timeout
        self.procs = _Processes()
        self.snapshot = ""
        self.source_side: _SourceFingerprint | None = None  # verification's, during the copy
        self.encoding = "UTF8"
        self.superuser = False
        self.touched = False  # set once the target may hold part of the copy
        self._lock = threading.Lock()
        self.phase = "schema"
        self.bytes_done = 0
        self.bytes_total = 0
        self.rows_done = 0
        self.tables_done = 0
        self.tables_total = 0
        self.chunks_done = 0
        self._table_parts_left: dict[int, int] = {}
        self._last_report: dict[str, float] = {}

    # -- time -------------------------------------------------------------------------------

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CommandTimeoutError(
                f"the copy did not finish within command_timeout ({self.command_timeout:g}s)",
                hint="raise --command-timeout / command_timeout for large databases",
                command="copy",
            )
        return left

    def _ms(self) -> int:
        return max(1000, int(self.remaining() * 1000))

    # -- progress ---------------------------------------------------------------------------

    def report(self, event: str = "phase", table: str | None = None) -> None:
        """Tell the progress callback; streaming reports at most every PROGRESS_INTERVAL."""
        if self.progress_cb is None:
            return
        now = time.monotonic()
        with self._lock:
            if event == "bytes":
                # The first report of each table goes out, then one per interval.
                last = self._last_report.get(table or "", 0.0)
                if last and now - last < PROGRESS_INTERVAL:
                    return
                self._last_report[table or ""] = now
            progress = CopyProgress(
                phase=self.phase,
                event=event,
                table=table,
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                rows_done=self.rows_done,
                tables_done=self.tables_done,
                tables_total=self.tables_total,
            )
        try:
            self.progress_cb(progress)
        except Exception:  # a broken progress display must not break a copy
            log.warning("the progress callback failed; progress reports stop", exc_info=True)
            self.progress_cb = None

    def _add_bytes(self, table: str) -> Callable[[int], None]:
        def add(n: int) -> None:
            with self._lock:
                self.bytes_done += n
            self.report("bytes", table)

        return add

    def _chunk_done(self, table: SourceTable, rows: int) -> bool:
        """Count a finished chunk; True when it was the table's last one."""
        with self._lock:
            self.rows_done += rows
            self.chunks_done += 1
            left = self._table_parts_left.get(table.oid, 1) - 1
            self._table_parts_left[table.oid] = left
            if left <= 0:
                self.tables_done += 1
        if left <= 0 and self.source_side is not None:
            self.source_side.loaded(table)
        self.report("table", table.label)
        return left <= 0

    # -- URLs for the tools -----------------------------------------------------------------

    def source_stream_url(self) -> PgURL:
        settings: dict[str, str | int] = dict(_STREAM_SETTINGS)
        settings.update(
            client_encoding=self.encoding,
            row_security="off",
            statement_timeout=self._ms(),
            idle_in_transaction_session_timeout=0,
        )
        return with_settings(self.source, settings)

    def target_stream_url(self) -> PgURL:
        settings: dict[str, str | int] = dict(_STREAM_SETTINGS)
        settings.update(
            client_encoding=self.encoding,
            synchronous_commit="off",
            statement_timeout=self._ms(),
        )
        return with_settings(self.target, settings)

    def target_ddl_url(self, parallel: int = 0) -> PgURL:
        """Sessions that build indexes and validate keys. The copy already runs `jobs` of
        them side by side, so their own parallel workers would mostly oversubscribe the
        server (measured: about 7% slower overall); only the long pole of the copy, the
        largest index build, gets `parallel` workers (see `_grant_parallel`)."""
        settings: dict[str, str | int] = {
            "synchronous_commit": "off",
            "statement_timeout": self._ms(),
            "max_parallel_maintenance_workers": parallel,
            "max_parallel_workers_per_gather": 0,
        }
        if self.maintenance_work_mem:
            settings["maintenance_work_mem"] = self.maintenance_work_mem
        return with_settings(self.target, settings)

    def psql(self, url: PgURL, *extra: str) -> list[str]:
        return [
            self.client.tool("psql"),
            "--no-psqlrc",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={tool_dsn(url)}",
            *extra,
        ]

    def snapshot_prelude(self) -> list[str]:
        return [
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            f"SET TRANSACTION SNAPSHOT '{self.snapshot}'",
        ]

    # -- streaming ----------------------------------------------------------------------------

    def stream(
        self,
        what: str,
        source_argv: list[str],
        target_argv: list[str],
        *,
        count_bytes_for: str,
    ) -> _StreamOutcome:
        """Run a source tool into a target tool through a pipe pair; raise CopyError on failure."""
        secrets = [u.password for u in (self.source, self.target) if u.password]
        src_r, src_w = _pipe()
        dst_r, dst_w = _pipe()
        fds = {src_r, src_w, dst_r, dst_w}

        def close(fd: int) -> None:
            if fd in fds:
                fds.discard(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)

        moved = 0
        relay_error: OSError | None = None
        try:
            with (
                tempfile.TemporaryFile() as target_out,
                spawn(
                    source_argv,
                    urls=[self.source],
                    connect_timeout=self.connect_timeout,
                    stdout=src_w,
                ) as (src_proc, src_err),
                spawn(
                    target_argv,
                    urls=[self.target],
                    connect_timeout=self.connect_timeout,
                    stdin=dst_r,
                    stdout=target_out,
                ) as (dst_proc, dst_err),
                self.procs.track(src_proc, dst_proc),
            ):
                close(src_w)
                close(dst_r)
                try:
                    moved = _relay(src_r, dst_w, self._add_bytes(count_bytes_for))
                except OSError as exc:  # the target went away (EPIPE); its error says why
                    relay_error = exc
                close(src_r)
                close(dst_w)
                codes = self._wait(dst_proc, src_proc)
                if self.procs.stopping.is_set() and any(c != 0 for c in codes):
                    raise _Stopped()
                dst_code, src_code = codes
                if dst_code != 0 or src_code != 0 or relay_error is not None:
                    cause = _stream_failure(
                        (Path(source_argv[0]).name, src_code, read_stderr(src_err, secrets)),
                        (Path(target_argv[0]).name, dst_code, read_stderr(dst_err, secrets)),
                        relay_error,
                    )
                    raise CopyError(f"copying {what} failed: {cause}")
                target_out.seek(0)
                rows = [int(m) for m in _COPY_TAG.findall(target_out.read())]
        finally:
            for fd in list(fds):
                close(fd)
        return _StreamOutcome(rows=rows, bytes=moved)

    def _wait(self, *procs: subprocess.Popen[bytes]) -> list[int]:
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=self.remaining()))
            except subprocess.TimeoutExpired:
                self.procs.stop_all()
                self.remaining()  # raises CommandTimeoutError
                raise
        return codes

    def copy_chunk(self, chunk: _Chunk) -> int:
        """One table, or one ctid range of it: binary COPY when the types allow it."""
        table = chunk.table
        fmt = " (FORMAT binary)" if table.binary else ""
        if chunk.parts == 1:
            source_sql = f"COPY {table.ident}{table.column_spec} TO STDOUT{fmt}"
        else:
            where = []
            if chunk.low_block is not None:
                where.append(f"ctid >= '({chunk.low_block},0)'::tid")
            if chunk.high_block is not None:
                where.append(f"ctid < '({chunk.high_block},0)'::tid")
            source_sql = (
                f"COPY (SELECT {table.column_list} FROM ONLY {table.ident} "
                f"WHERE {' AND '.join(where)}) TO STDOUT{fmt}"
            )
        source_argv = self.psql(self.source_stream_url(), "--quiet")
        for command in [*self.snapshot_prelude(), source_sql]:
            source_argv += ["-c", command]
        if chunk.parts == 1:
            # Whole table in one transaction that also empties it: rows arrive frozen and
            # all-visible, and a repeated load of the table cannot duplicate rows.
            options = "(FORMAT binary, FREEZE)" if table.binary else "(FREEZE)"
            target_cmds = [
                "BEGIN",
                f"TRUNCATE ONLY {table.ident}",
                f"COPY {table.ident}{table.column_spec} FROM STDIN {options}",
                "COMMIT",
            ]
        else:
            target_cmds = [f"COPY {table.ident}{table.column_spec} FROM STDIN{fmt}"]
        target_argv = self.psql(self.target_stream_url())
        for command in target_cmds:
            target_argv += ["-c", command]
        outcome = self.stream(
            f"table {chunk.label}", source_argv, target_argv, count_bytes_for=table.label
        )
        return sum(outcome.rows)

    def copy_batch(self, tables: list[SourceTable]) -> list[int]:
        """Many small tables through one session pair and one target transaction.

        The source prints a psql script (`COPY ... FROM STDIN;` + inline text rows + `\\.`
        per table) that the target psql runs as it arrives. Small tables skip the
        TRUNCATE + FREEZE of big ones: per table it would cost more than the load itself.
        """
        lines = [f"{c};" for c in self.snapshot_prelude()]
        lines.append("SELECT 'BEGIN;';")
        for table in tables:
            stmt = f"COPY {table.ident}{table.column_spec} FROM STDIN;"
            lines.append(f"SELECT {quote_literal(stmt)};")
            lines.append(f"COPY {table.ident}{table.column_spec} TO STDOUT;")
            lines.append("SELECT '\\.';")
        lines.append("SELECT 'COMMIT;';")
        fd, name = tempfile.mkstemp(prefix="batch-", suffix=".sql", dir=self.workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        try:
            source_argv = self.psql(
                self.source_stream_url(), "--quiet", "--no-align", "--tuples-only", f"--file={name}"
            )
            target_argv = self.psql(self.target_stream_url())
            what = (
                f"table {tables[0].label}"
                if len(tables) == 1
                else f"{len(tables)} small tables ({tables[0].label}, ...)"
            )
            outcome = self.stream(what, source_argv, target_argv, count_bytes_for=tables[0].label)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if len(outcome.rows) != len(tables):
            raise CopyError(
                f"copying {len(tables)} small tables: expected {len(tables)} COPY results, "
                f"got {len(outcome.rows)}"
            )
        return outcome.rows

    def copy_large_objects(self, part: int = 0, parts: int = 1) -> int:
        """Large objects, with their OIDs and contents, read in the snapshot.

        Binary COPY of `lo_get()` slices for the objects whose OID falls in `part` of
        `parts`, into a temporary table on the target, then `lo_create()` + `lo_put()`
        recreate each under its own OID: no hex text, and `parts` streams side by side
        (pg_dump writes large objects as one serial script). The target holds a part's
        bytes twice until its transaction commits. Returns the number of slices.
        """
        # each object in slices of at most LO_SLICE bytes (one bytea must stay below 1 GB);
        # its size comes from a read-only descriptor, opened and closed in the snapshot
        source_sql = f"""COPY (
            WITH sized AS (
                SELECT m.oid, (
                    SELECT CASE WHEN pg_catalog.lo_close(d.fd) = 0 THEN d.size END
                    FROM (SELECT o.fd, pg_catalog.lo_lseek64(o.fd, 0, 2) AS size
                          FROM (SELECT pg_catalog.lo_open(m.oid, 262144) AS fd OFFSET 0) o
                          OFFSET 0) d
                ) AS size
                FROM pg_catalog.pg_largeobject_metadata m
                WHERE m.oid::bigint % {parts} = {part}
            )
            SELECT s.oid, g.off, pg_catalog.lo_get(s.oid, g.off, {LO_SLICE})
            FROM sized s,
                 LATERAL generate_series(0::bigint, greatest(s.size - 1, 0), {LO_SLICE}) g(off)
        ) TO STDOUT (FORMAT binary)"""
        source_argv = self.psql(self.source_stream_url(), "--quiet")
        for command in [*self.snapshot_prelude(), source_sql]:
            source_argv += ["-c", command]
        target_argv = self.psql(self.target_stream_url())
        for command in (
            "BEGIN",
            "CREATE TEMPORARY TABLE render_rotator_lo (loid oid, off bigint, data bytea)"
            " ON COMMIT DROP",
            "COPY render_rotator_lo FROM STDIN (FORMAT binary)",
            "SELECT count(pg_catalog.lo_create(loid))"
            " FROM (SELECT DISTINCT loid FROM render_rotator_lo) o",
            "SELECT count(pg_catalog.lo_put(loid, off, data)) FROM render_rotator_lo",
            "COMMIT",
        ):
            target_argv += ["-c", command]
        label = "large objects" if parts == 1 else f"large objects (part {part + 1}/{parts})"
        outcome = self.stream(label, source_argv, target_argv, count_bytes_for="large objects")
        return sum(outcome.rows)

    def copy_large_object_comments(self) -> None:
        """Comments on large objects, once every part has created its objects."""
        with (
            connection(self.source, connect_timeout=self.connect_timeout, autocommit=False) as src,
            src.cursor() as cur,
        ):
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
            cur.execute(
                "SELECT objoid, description FROM pg_catalog.pg_description"
                " WHERE classoid = 'pg_catalog.pg_largeobject'::regclass"
            )
            comments = cur.fetchall()
        if not comments:
            return
        with (
            connection(
                self.target,
                connect_timeout=self.connect_timeout,
                statement_timeout=self.remaining(),
            ) as dst,
            dst.cursor() as cur,
        ):
            for oid, text in comments:
                cur.execute(f"COMMENT ON LARGE OBJECT {int(oid)} IS %s", (text,))

    def restore_entries(
        self, path: Path, lines: Sequence[str], what: str, *, jobs: int, parallel: int = 0
    ) -> None:
        """pg_restore exactly the TOC entries given (post-data section) into the target."""
        fd, name = tempfile.mkstemp(prefix="toc-", suffix=".list", dir=self.workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        url = self.target_ddl_url(parallel)
        argv = [
            self.client.tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            "--section=post-data",
            f"--use-list={name}",
            f"--dbname={tool_dsn(url)}",
        ]
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        argv.append(str(path))
        try:
            with (
                spawn(argv, urls=[self.target], connect_timeout=self.connect_timeout) as (
                    proc,
                    err,
                ),
                self.procs.track(proc),
            ):
                code = self._wait(proc)[0]
                if code != 0:
                    if self.procs.stopping.is_set():
                        raise _Stopped()
                    text = read_stderr(err, [self.target.password or ""])
                    raise CopyError(
                        f"{what} failed: {describe_exit('pg_restore', code)}: "
                        f"{last_error_line(text)}"
                    )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    # -- the scheduler ------------------------------------------------------------------------

    def run_tasks(self, tasks: list[_Task], after: Callable[[_Task], list[_Task]]) -> None:
        """Run tasks on `jobs` threads, highest priority first; `after(task)` may add tasks.

        The first failure stops everything: other workers' processes are killed and the
        failure is raised here.
        """
        cond = threading.Condition()
        ready = list(tasks)
        running: list[_Task] = []
        failure: list[BaseException] = []
        counter = len(tasks)

        def compatible(task: _Task) -> bool:
            mine = set(task.locks)
            return not any(
                (task.exclusive or other.exclusive) and mine.intersection(other.locks)
                for other in running
            )

        def pick() -> _Task | None:
            with cond:
                while True:
                    if failure:
                        return None
                    ready.sort(key=lambda t: (-t.priority, t.seq))
                    for i, task in enumerate(ready):
                        if compatible(task):
                            running.append(ready.pop(i))
                            _grant_parallel(task, ready, self.jobs)
                            return task
                    if not running:
                        return None
                    cond.wait(0.5)

        def worker() -> None:
            nonlocal counter
            while True:
                task = pick()
                if task is None:
                    return
                began = time.monotonic()
                try:
                    finished = task.run()
                    more = after(task) if finished else []
                    ended = time.monotonic()
                    self.timeline.append(
                        TaskTiming(
                            task.kind,
                            task.label,
                            task.ready_at - self.started,
                            began - self.started,
                            ended - self.started,
                            task.parent,
                            task.parallel,
                            task.blocked_by,
                        )
                    )
                    log.debug(
                        "task %s done: %.2fs-%.2fs",
                        task.label,
                        began - self.started,
                        ended - self.started,
                    )
                except BaseException as exc:  # noqa: BLE001 - the first one is raised below
                    with cond:
                        running.remove(task)
                        if not isinstance(exc, _Stopped) or not failure:
                            failure.append(exc)
                        cond.notify_all()
                    self.procs.stop_all()
                    return
                with cond:
                    running.remove(task)
                    for waiting in ready:  # the last task whose end each waiting task saw
                        if waiting.ready_at < ended:
                            waiting.blocked_by = task.label
                    for extra in more:
                        counter += 1
                        extra.seq = counter
                        extra.parent = task.label
                        extra.ready_at = ended
                        ready.append(extra)
                    cond.notify_all()

        for i, task in enumerate(tasks):
            task.seq = i
            task.ready_at = time.monotonic()
        threads = [
            threading.Thread(target=worker, name=f"copy-worker-{i}", daemon=True)
            for i in range(self.jobs)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.25)
                    if time.monotonic() > self.deadline and not failure:
                        with cond:
                            failure.append(
                                CommandTimeoutError(
                                    f"the copy did not finish within command_timeout "
                                    f"({self.command_timeout:g}s) and was stopped",
                                    hint="raise --command-timeout / command_timeout",
                                    command="copy",
                                )
                            )
                            cond.notify_all()
                        self.procs.stop_all()
        except BaseException:
            self.procs.stop_all()
            for thread in threads:
                thread.join(15)
            raise
        if failure:
            real = [f for f in failure if not isinstance(f, _Stopped)]
            raise (real or failure)[0]


# -- public API -------------------------------------------------------------------------------


def _server_info(conn: psycopg2.extensions.connection) -> tuple[int, bool]:
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cur.fetchone()
    return int(conn.server_version), bool(row and row[0])


def _same_database(a: PgURL, b: PgURL) -> bool:
    return (a.host, a.port, a.dbname) == (b.host, b.port, b.dbname)


def copy_database(
    source_url: str | PgURL,
    target_url: str | PgURL,
    *,
    jobs: int = 2,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    pg_bin: str | Path | None = None,
    verify: bool = False,
    verify_mode: str = "content",
    clean: bool = False,
    progress: ProgressCallback | None = None,
    maintenance_work_mem: str | None = None,
    split_bytes: int | None = None,
) -> CopyResult:
    """Copy every schema object and row of `source_url` into the empty `target_url`.

    `jobs` workers share the data streams and index builds. The target must be empty
    unless `clean=True`, which first drops every user object in it (the way to re-run after
    a failed copy). The source database's settings (`ALTER DATABASE ... SET`) are set on
    the target. `verify=True` compares the target with the snapshot that was copied, by
    content (`verify_mode="content"`: per-table checksums, sequences, definitions,
    settings, large objects; "counts": row counts instead of checksums) and raises
    VerificationError on any difference.
    `maintenance_work_mem` is set per session for index builds on the target (None keeps
    the server's); `split_bytes` forces tables larger than it into ctid ranges of about
    that size (default: only tables larger than their fair share are split).
    Raises CopyError (with the table and cause) when a worker fails, CommandTimeoutError
    when `command_timeout` runs out; in both cases the target holds a partial copy.
    """
    if jobs < 1:
        raise UsageError("jobs must be at least 1")
    if connect_timeout <= 0 or command_timeout <= 0:
        raise UsageError("timeouts must be positive numbers of seconds")
    source = parse_url(source_url)
    target = parse_url(target_url)
    if _same_database(source, target):
        raise UsageError(
            f"source and target are the same database ({source.redacted()})",
            hint="copy into another, empty database",
        )
    needs_tls = any(url_needs_tls(u.host, u.sslmode) for u in (source, target))
    client = resolve_client(pg_bin, needs_tls=needs_tls)
    with tempfile.TemporaryDirectory(prefix="render-rotator-copy-") as tmp:
        copier = _Copier(
            source,
            target,
            client=client,
            jobs=jobs,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            maintenance_work_mem=maintenance_work_mem,
            split_bytes=split_bytes,
            progress=progress,
            workdir=Path(tmp),
        )
        copier.pg_bin = pg_bin
        copier.needs_tls = needs_tls
        try:
            return _run(copier, verify=verify_mode if verify else None, clean=clean)
        except DatabaseError as exc:
            if not copier.touched:
                raise
            if isinstance(exc, ToolError) and not isinstance(exc, CommandTimeoutError):
                exc = CopyError(exc.message, hint=exc.hint)
            exc.message += (
                f"; the target {target.redacted()} now holds a partial copy: run the copy "
                "again with clean=True (--clean) to drop it and start over"
            )
            raise exc from None
        finally:
            copier.procs.stop_all()
            if copier.source_side is not None:
                copier.source_side.stop()


def _run(c: _Copier, *, verify: str | None, clean: bool) -> CopyResult:
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + (now - mark)
        mark = now

    # -- the target: reachable, empty (or cleaned) -----------------------------------------
    with connection(
        c.target, connect_timeout=c.connect_timeout, statement_timeout=c.remaining()
    ) as tconn:
        target_num, c.superuser = _server_info(tconn)
        leftovers = target_objects(tconn)
        if leftovers and not clean:
            shown = ", ".join(leftovers[:5]) + (" ..." if len(leftovers) > 5 else "")
            raise CopyError(
                f"the target {c.target.redacted()} is not empty ({len(leftovers)} objects: "
                f"{shown})",
                hint="copy into an empty database, or pass clean=True (--clean) to drop "
                "every object in it first",
            )
        if leftovers:
            c.touched = True
            dropped = clean_target(tconn)
            log.warning("cleaned the target: dropped %d objects left by an earlier run", dropped)
            rest = target_objects(tconn)
            if rest:
                raise CopyError(
                    f"could not clean the target {c.target.redacted()}: {', '.join(rest[:5])} "
                    "remain",
                    hint="drop them by hand (they may belong to another role)",
                )
    phase("prepare")

    # -- the snapshot everyone shares ------------------------------------------------------------
    exporter = connect(
        c.source,
        connect_timeout=c.connect_timeout,
        statement_timeout=c.remaining(),
        autocommit=False,
    )
    try:
        return _copy_in_snapshot(c, exporter, target_num, phases, phase, verify)
    except psycopg2.Error as exc:
        raise sql_error(c.source, exc) from None
    finally:
        with contextlib.suppress(psycopg2.Error):
            exporter.rollback()
        exporter.close()


def _copy_in_snapshot(
    c: _Copier,
    exporter: psycopg2.extensions.connection,
    target_num: int,
    phases: dict[str, float],
    phase: Callable[[str], None],
    verify: str | None,
) -> CopyResult:
    exporter.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with exporter.cursor() as cur:
        cur.execute("SET idle_in_transaction_session_timeout = 0")
        cur.execute("SELECT pg_export_snapshot()")
        row = cur.fetchone()
        assert row is not None
        c.snapshot = str(row[0])
        if not _SNAPSHOT_ID.match(c.snapshot):
            raise CopyError(f"unexpected snapshot id {c.snapshot!r}")
    source_major = server_major_from_num(int(exporter.server_version))
    if rejection(c.client, server_major=source_major, needs_tls=c.needs_tls) is not None:
        c.client = resolve_client(c.pg_bin, server_major=source_major, needs_tls=c.needs_tls)
    if server_major_from_num(target_num) < source_major:
        log.warning(
            "copying from PostgreSQL %d to an older server (%d): the schema may not restore",
            source_major,
            server_major_from_num(target_num),
        )
    plan = _read_plan(exporter)
    c.encoding = plan.encoding
    _lock_tables(exporter, plan.tables, c.remaining())
    c.tables_total = len(plan.tables)
    c.bytes_total = sum(t.size for t in plan.tables)
    c.phase = "schema"
    c.report()

    # -- schema: one archive (pre + post data) in the snapshot, pre-data restored now ---------
    schema_path = c.workdir / "schema.dump"
    run_tool(
        [
            c.client.tool("pg_dump"),
            "--format=custom",
            f"--file={schema_path}",
            "--section=pre-data",
            "--section=post-data",
            f"--snapshot={c.snapshot}",
            f"--lock-wait-timeout={c._ms()}",
            "--no-password",
            f"--dbname={c.source.public_url()}",
        ],
        urls=[c.source],
        timeout=c.remaining(),
        what=f"pg_dump of the schema of {c.source.redacted()}",
        connect_timeout=c.connect_timeout,
    )
    toc = archive.list_archive(c.client, schema_path, timeout=c.remaining())
    with archive.restore_list(toc, superuser=c.superuser) as (list_file, skipped):
        filtered_toc = Path(list_file).read_text(encoding="utf-8").splitlines()
        # Large objects are created together with their contents by the data step.
        Path(list_file).write_text(
            "\n".join(";" + ln if _is_large_object_entry(ln) else ln for ln in filtered_toc) + "\n",
            encoding="utf-8",
        )
        run_tool(
            [
                c.client.tool("pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--no-password",
                "--single-transaction",
                "--section=pre-data",
                f"--use-list={list_file}",
                f"--dbname={tool_dsn(c.target_ddl_url())}",
                str(schema_path),
            ],
            urls=[c.target],
            timeout=c.remaining(),
            what=f"restoring the schema into {c.target.redacted()}",
            connect_timeout=c.connect_timeout,
        )
    for entry in skipped:
        log.info("skipped (needs a superuser, holds no data): %s", entry)
    c.touched = True
    phase("schema")

    # -- data, with the big tables' indexes built as soon as each table is loaded -------------
    if verify:
        c.source_side = _SourceFingerprint(c, verify)
    c.phase = "data"
    chunks, batches = plan_chunks(
        plan.tables,
        jobs=c.jobs,
        split_bytes=c.split_bytes,
        ctid_ranges=plan.server_num >= 140000,
    )
    for chunk in chunks:
        c._table_parts_left[chunk.table.oid] = chunk.parts
    copied = {t.oid for t in plan.tables}
    early = _early_index_entries(filtered_toc, plan, copied)
    foreign_keys = _early_foreign_keys(filtered_toc, plan, copied)
    early_lines = {e.line for entries in early.values() for e in entries}
    early_lines |= {entry.line for entry, _fk in foreign_keys}
    pipeline = _Pipeline(c, plan, schema_path, early, foreign_keys)
    tasks = pipeline.initial(chunks, batches)
    after = pipeline.after
    c.run_tasks(tasks, after)
    phase("data")

    # -- sequences, then the rest of post-data with pg_restore -j -----------------------------
    values = _read_sequences(exporter, plan.sequences)
    _set_sequences(c, values)
    _copy_settings(c)
    phase("sequences")
    c.phase = "post-data"
    c.report()
    rest = [line if line not in early_lines else ";" + line for line in filtered_toc]
    c.restore_entries(
        schema_path,
        rest,
        f"restoring indexes and constraints into {c.target.redacted()}",
        jobs=c.jobs,
    )
    phase("post-data")

    c.phase = "analyze"
    c.report()
    # Tables were analyzed as soon as their indexes existed; what is left needs everything:
    # partitioned and inheritance parents, materialized views (refreshed in post-data).
    analyze_parallel(
        c.target,
        jobs=c.jobs,
        connect_timeout=c.connect_timeout,
        timeout=c.remaining(),
        only_parents_and_views=True,
    )
    phase("analyze")

    report: VerificationReport | None = None
    if c.source_side is not None:
        c.phase = "verify"
        c.report()
        report = _verify(c, c.source_side)
        phase("verify")
    c.phase = "done"
    c.report()
    result = CopyResult(
        tables=len(plan.tables),
        rows=c.rows_done,
        bytes=c.bytes_done,
        seconds=time.monotonic() - c.started,
        phase_seconds=phases,
        chunks=len(chunks) + sum(len(b) for b in batches),
        sequences=len(values),
        large_objects=plan.large_objects,
        early_indexes=len(early_lines),
        skipped=list(skipped),
        verification=report,
        timeline=sorted(c.timeline, key=lambda t: t.began),
    )
    log.info("%s", result.summary())
    if report is not None and not report.equal:
        raise VerificationError(report.summary(), differences=report.differences)
    return result


class _Pipeline:
    """Which work follows which: data, then that table's indexes and keys, then its ANALYZE,
    then the foreign keys between tables that are both ready.

    Priorities order the ready tasks: index builds first (a long GIN build must start as
    soon as its table is loaded), then foreign keys and ANALYZE, then data (largest first),
    large objects last.
    """

    INDEX, FOREIGN_KEY, ANALYZE, DATA, BLOBS = 10_000.0, 8_000.0, 5_000.0, 1_000.0, 0.0

    def __init__(
        self,
        c: _Copier,
        plan: _Plan,
        schema_path: Path,
        early: dict[int, list[_TocEntry]],
        foreign_keys: list[tuple[_TocEntry, _Constraint]],
    ) -> None:
        self.c = c
        self.plan = plan
        self.schema_path = schema_path
        self.early = early
        self._lock = threading.Lock()
        self._pending_indexes: dict[int, int] = {}
        self._ready: set[int] = set()
        self._waiting_fks = list(foreign_keys)
        self._pending_blobs = 0

    def initial(self, chunks: list[_Chunk], batches: list[list[SourceTable]]) -> list[_Task]:
        """Data tasks in the plan's load order (a batch ranks as its earliest table)."""
        tasks: list[_Task] = []
        rank = {t.oid: i for i, t in enumerate(self.plan.tables)}
        total = len(rank)
        for chunk in chunks:
            tasks.append(
                _Task(
                    "data",
                    chunk.label,
                    priority=self.DATA + total - rank[chunk.table.oid] - chunk.part / 1000,
                    run=_bound(_chunk_runner, self.c, chunk),
                    locks=(chunk.table.oid,),
                    tables=(chunk.table,),
                    cost=chunk.table.size // max(1, chunk.parts),
                )
            )
        for batch in batches:
            tasks.append(
                _Task(
                    "batch",
                    f"{len(batch)} small tables",
                    priority=self.DATA + total - min(rank[t.oid] for t in batch),
                    run=_bound(_batch_runner, self.c, batch),
                    locks=tuple(t.oid for t in batch),
                    tables=tuple(batch),
                    cost=sum(t.size for t in batch),
                )
            )
        parts = max(1, min(self.c.jobs, self.plan.large_objects))
        self._pending_blobs = parts if self.plan.large_objects else 0
        for part in range(self._pending_blobs):
            label = "large objects" if parts == 1 else f"large objects (part {part + 1}/{parts})"
            tasks.append(
                _Task("blobs", label, self.BLOBS, run=_bound(_blobs_runner, self.c, part, parts))
            )
        return tasks

    def after(self, task: _Task) -> list[_Task]:
        """The tasks that `task` (just finished) makes ready; called from worker threads."""
        if task.kind == "data":
            table = task.tables[0]
            entries = self.early.get(table.oid, [])
            if not entries:
                return self._analyze(task.tables)
            with self._lock:
                self._pending_indexes[table.oid] = len(entries)
            builds = []
            for entry in entries:
                cost = self.plan.index_cost.get(_index_oid(entry, self.plan), 0)
                build = _Task(
                    "index",
                    entry.desc,
                    priority=self.INDEX + cost / 1e6,
                    run=lambda: True,
                    locks=(table.oid,),
                    tables=task.tables,
                    exclusive=entry.catalog == _PG_CONSTRAINT,
                    cost=cost,
                )
                build.run = _bound(_index_runner, self.c, self.schema_path, entry, build)
                builds.append(build)
            return builds
        if task.kind == "index":
            table = task.tables[0]
            with self._lock:
                self._pending_indexes[table.oid] -= 1
                last = self._pending_indexes[table.oid] == 0
            return self._analyze(task.tables) if last else []
        if task.kind == "batch":
            entries = [e for t in task.tables for e in self.early.get(t.oid, [])]
            if not entries:
                return self._analyze(task.tables)
            label = f"indexes of {len(task.tables)} small tables"
            return [
                _Task(
                    "batch-index",
                    label,
                    priority=self.INDEX,
                    run=_bound(_entries_runner, self.c, self.schema_path, entries, label),
                    locks=tuple(t.oid for t in task.tables),
                    tables=task.tables,
                    exclusive=True,
                )
            ]
        if task.kind == "batch-index":
            return self._analyze(task.tables)
        if task.kind == "blobs":
            with self._lock:
                self._pending_blobs -= 1
                last = self._pending_blobs == 0
            if not last:
                return []
            return [
                _Task(
                    "blobs-meta",
                    "large object comments",
                    self.BLOBS,
                    run=_bound(_blob_comments_runner, self.c),
                )
            ]
        if task.kind == "analyze":
            return self._tables_ready(task.tables)
        return []

    def _analyze(self, tables: Sequence[SourceTable]) -> list[_Task]:
        # Inheritance parents wait for the final ANALYZE, when their children are loaded.
        parents = [t for t in tables if t.has_children]
        todo = tuple(t for t in tables if not t.has_children)
        tasks = self._tables_ready(parents)
        if todo:
            label = todo[0].label if len(todo) == 1 else f"{len(todo)} small tables"
            tasks.append(
                _Task(
                    "analyze",
                    f"ANALYZE {label}",
                    priority=self.ANALYZE,
                    run=_bound(_analyze_runner, self.c, todo),
                    locks=tuple(t.oid for t in todo),
                    tables=todo,
                )
            )
        return tasks

    def _tables_ready(self, tables: Sequence[SourceTable]) -> list[_Task]:
        """Tables loaded, indexed and analyzed: their foreign keys can be validated now."""
        if not tables:
            return []
        tasks = []
        with self._lock:
            self._ready.update(t.oid for t in tables)
            waiting = []
            for entry, fk in self._waiting_fks:
                if fk.table in self._ready and fk.referenced in self._ready:
                    tasks.append(
                        _Task(
                            "foreign-key",
                            entry.desc,
                            priority=self.FOREIGN_KEY,
                            run=_bound(
                                _entries_runner, self.c, self.schema_path, [entry], entry.desc
                            ),
                            locks=(fk.table, fk.referenced),
                            exclusive=True,
                        )
                    )
                else:
                    waiting.append((entry, fk))
            self._waiting_fks = waiting
        return tasks


def _bound(func: Callable[..., bool], *args: Any) -> Callable[[], bool]:
    def run() -> bool:
        return func(*args)

    return run


def _chunk_runner(c: _Copier, chunk: _Chunk) -> bool:
    rows = c.copy_chunk(chunk)
    return c._chunk_done(chunk.table, rows)


def _batch_runner(c: _Copier, batch: list[SourceTable]) -> bool:
    rows = c.copy_batch(batch)
    for table, n in zip(batch, rows, strict=True):
        c._chunk_done(table, n)
    return True


def _entries_runner(
    c: _Copier, schema_path: Path, entries: Sequence[_TocEntry], label: str
) -> bool:
    c.restore_entries(schema_path, [e.line for e in entries], f"building {label}", jobs=1)
    return True


def _index_runner(c: _Copier, schema_path: Path, entry: _TocEntry, task: _Task) -> bool:
    c.restore_entries(
        schema_path, [entry.line], f"building {entry.desc}", jobs=1, parallel=task.parallel
    )
    return True


# Large objects travel in slices of this many bytes: a bytea value must stay below 1 GB.
LO_SLICE = 64 * 1024 * 1024

# An index build this large (weighted source size) that outweighs all other waiting work is
# the copy's long pole: it gets the server's parallel maintenance workers. PostgreSQL 18
# builds GIN indexes in parallel too (measured here on a 0.2 GB jsonb_ops GIN: 15.6 s with
# no worker, 8.7 s with one, 5.2 s with two).
PARALLEL_BUILD_MIN_COST = 32 * 1024 * 1024


def _grant_parallel(task: _Task, waiting: Sequence[_Task], jobs: int) -> None:
    """Give the long pole the other workers' share of the server when nothing else needs it."""
    if task.kind != "index" or jobs < 2 or task.cost < PARALLEL_BUILD_MIN_COST:
        return
    if task.cost >= sum(t.cost for t in waiting):
        task.parallel = jobs - 1


def _analyze_runner(c: _Copier, tables: Sequence[SourceTable]) -> bool:
    """Planner statistics for freshly loaded tables, while other work still runs."""
    with (
        connection(
            c.target, connect_timeout=c.connect_timeout, statement_timeout=c.remaining()
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"ANALYZE {', '.join(t.ident for t in tables)}")
    return True


def _blobs_runner(c: _Copier, part: int, parts: int) -> bool:
    c.copy_large_objects(part, parts)
    return True


def _blob_comments_runner(c: _Copier) -> bool:
    c.copy_large_object_comments()
    return True


def _is_large_object_entry(line: str) -> bool:
    """pg_dump counts large objects' metadata (lo_create, comments) as data."""
    match = _TOC_LINE.match(line)
    if not match:
        return False
    desc = match.group(4)
    return int(match.group(2)) == _PG_LARGEOBJECT or " - LARGE OBJECT " in f" {desc}"


def _index_oid(entry: _TocEntry, plan: _Plan) -> int:
    if entry.catalog == _PG_CONSTRAINT and entry.oid in plan.constraints:
        return plan.constraints[entry.oid].index
    return entry.oid


def _early_index_entries(
    toc_lines: Sequence[str], plan: _Plan, copied: set[int]
) -> dict[int, list[_TocEntry]]:
    """Index and primary/unique/exclusion key entries of the tables we copy, by table.

    They only need their own table's rows, so they can be built while other tables are
    still streaming. Everything else (foreign keys, partitioned parents' indexes and their
    ATTACH, triggers, materialized views) waits for the final pg_restore -j.
    """
    big = copied
    early: dict[int, list[_TocEntry]] = {}
    for entry in _parse_toc("\n".join(line for line in toc_lines if not line.startswith(";"))):
        table_oid: int | None = None
        if entry.catalog == _PG_CLASS and entry.desc.startswith("INDEX "):
            table_oid = plan.index_table.get(entry.oid)
        elif entry.catalog == _PG_CONSTRAINT and entry.desc.startswith("CONSTRAINT "):
            found = plan.constraints.get(entry.oid)
            if found and found.contype in ("p", "u", "x"):
                table_oid = found.table
        if table_oid is not None and table_oid in big:
            early.setdefault(table_oid, []).append(entry)
    for entries in early.values():
        entries.sort(key=lambda e: -plan.index_cost.get(_index_oid(e, plan), 0))
    return early


def _early_foreign_keys(
    toc_lines: Sequence[str], plan: _Plan, copied: set[int]
) -> list[tuple[_TocEntry, _Constraint]]:
    """Foreign keys between two copied tables: validated as soon as both are ready."""
    found = []
    for entry in _parse_toc("\n".join(line for line in toc_lines if not line.startswith(";"))):
        if entry.catalog != _PG_CONSTRAINT or not entry.desc.startswith("FK CONSTRAINT "):
            continue
        fk = plan.constraints.get(entry.oid)
        if fk and fk.contype == "f" and fk.table in copied and fk.referenced in copied:
            found.append((entry, fk))
    return found


def _lock_tables(
    conn: psycopg2.extensions.connection, tables: Sequence[SourceTable], timeout: float
) -> None:
    """ACCESS SHARE locks for the whole copy: no DDL can change a table under the workers."""
    with conn.cursor() as cur:
        cur.execute(f"SET LOCAL lock_timeout = {max(1000, int(timeout * 1000))}")
        for start in range(0, len(tables), 500):
            names = ", ".join(t.ident for t in tables[start : start + 500])
            if names:
                cur.execute(f"LOCK TABLE {names} IN ACCESS SHARE MODE")


def _set_sequences(c: _Copier, values: Sequence[tuple[str, int, bool]]) -> None:
    if not values:
        return
    with (
        connection(
            c.target, connect_timeout=c.connect_timeout, statement_timeout=c.remaining()
        ) as conn,
        conn.cursor() as cur,
    ):
        for start in range(0, len(values), 500):
            statements = [
                sql.SQL("SELECT pg_catalog.setval({}::regclass, {}, {})").format(
                    sql.Literal(name), sql.Literal(value), sql.Literal(called)
                )
                for name, value, called in values[start : start + 500]
            ]
            cur.execute(sql.SQL("; ").join(statements))


class _SourceFingerprint:
    """The source side of the verification, summed in the copy's snapshot by one session
    while the copy runs (the source is mostly idle then), so that only the target's side is
    left once the data is in."""

    def __init__(self, c: _Copier, mode: str) -> None:
        self.mode = mode
        self.plan = key_ranges(c.source, jobs=c.jobs, mode=mode, connect_timeout=c.connect_timeout)
        self.cancel = threading.Event()
        self.result: Fingerprint | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(c,), name="source-fingerprint", daemon=True
        )
        self.thread.start()
        # the target's big tables, each summed as soon as it is loaded
        self.target = TableSummer(
            c.target, self.plan, connect_timeout=c.connect_timeout, statement_timeout=c.remaining()
        )

    def _run(self, c: _Copier) -> None:
        try:
            self.result = take_fingerprint(
                c.source,
                snapshot=c.snapshot,
                jobs=1,
                mode=self.mode,
                like=self.plan,
                connect_timeout=c.connect_timeout,
                statement_timeout=c.remaining(),
                cancel=self.cancel,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc

    def loaded(self, table: SourceTable) -> None:
        if table.size >= SMALL_TABLE_BYTES and not table.has_children:
            self.target.add(table.schema, table.name)

    def stop(self) -> None:
        self.cancel.set()
        self.target.stop()
        self.thread.join()

    def wait(self) -> Fingerprint:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _verify(c: _Copier, source_side: _SourceFingerprint) -> VerificationReport:
    """The target's fingerprint, compared with the source's taken in the copied snapshot."""
    started = time.monotonic()
    target = take_fingerprint(
        c.target,
        jobs=c.jobs,
        mode=source_side.mode,
        like=source_side.plan,
        connect_timeout=c.connect_timeout,
        statement_timeout=c.remaining(),
        known=source_side.target.finish(),
    )
    source = source_side.wait()
    report = compare(source, target, time.monotonic() - started)
    log.debug("%s", report.summary())  # the caller shows (or raises) the result
    return report


def _copy_settings(c: _Copier) -> int:
    """The source database's own settings (`ALTER DATABASE ... SET`), which a schema dump
    without --create leaves out, set on the target."""
    settings = database_settings(c.source, connect_timeout=c.connect_timeout)
    try:
        apply_settings(c.target, settings, connect_timeout=c.connect_timeout)
    except DatabaseError as exc:
        raise CopyError(
            f"could not carry the database settings over: {exc.message}",
            hint="the target's role must own the target database",
        ) from None
    return len(settings)


__all__ = [
    "CopyProgress",
    "CopyResult",
    "ProgressCallback",
    "clean_target",
    "copy_database",
    "plan_chunks",
    "target_objects",
]
