"""The proof that a copy is complete: fingerprints of both sides compared, and inventories.

`verify_copy` compares the content fingerprints (postgres/fingerprint.py) of source and
target, taken side by side (the source in the copy's snapshot when given) or against one
stored earlier (the backup's). An inventory (exact row counts per table, every sequence's
value, counts of schema objects) is the cheap summary kept in backup manifests and shown
by progress displays.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from render_rotator.postgres.catalog import USER_SCHEMA, not_extension_member, qualified
from render_rotator.postgres.connect import connection
from render_rotator.postgres.fingerprint import (
    Fingerprint,
    compare_fingerprints,
    fingerprint_like,
    key_ranges,
    take_fingerprint,
)
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")


_OBJECT_COUNTS: dict[str, str] = {
    "schemas": f"""SELECT count(*) FROM pg_namespace n WHERE {USER_SCHEMA}
        AND {not_extension_member("pg_namespace", "n.oid")}""",
    "tables": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMA}
        AND {not_extension_member("pg_class", "c.oid")}""",
    "views": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND {USER_SCHEMA}
        AND {not_extension_member("pg_class", "c.oid")}""",
    "materialized_views": f"""SELECT count(*) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND {USER_SCHEMA}""",
    "indexes": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('i', 'I') AND {USER_SCHEMA}
        AND {not_extension_member("pg_class", "c.oid")}""",
    "sequences": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND {USER_SCHEMA}
        AND {not_extension_member("pg_class", "c.oid")}""",
    # PostgreSQL 18 records NOT NULL as constraints (contype 'n'); older servers do not, so
    # they are left out so counts compare across majors
    "constraints": f"""SELECT count(*) FROM pg_constraint k
        JOIN pg_namespace n ON n.oid = k.connamespace WHERE {USER_SCHEMA} AND k.contype <> 'n'
        AND {not_extension_member("pg_constraint", "k.oid")}""",
    "functions": f"""SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMA}
        AND {not_extension_member("pg_proc", "p.oid")}""",
    "triggers": f"""SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal
        AND {USER_SCHEMA}""",
    "types": f"""SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {USER_SCHEMA}
        AND {not_extension_member("pg_type", "t.oid")}""",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
}

# Row counts: tables, and materialized views holding data (one created WITH NO DATA cannot
# be read, and must arrive unpopulated: populated on one side only, it shows as a difference).
_TABLES = f"""
    SELECT n.nspname, c.relname, c.relkind FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) AND {USER_SCHEMA}
    AND {not_extension_member("pg_class", "c.oid")}
    ORDER BY 1, 2
"""

_SEQUENCES = f"""
    SELECT s.schemaname, s.sequencename, s.last_value FROM pg_sequences s
    JOIN pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
    WHERE {USER_SCHEMA} AND {not_extension_member("pg_class", "c.oid")} ORDER BY 1, 2
"""


@dataclass
class Inventory:
    """Exact contents of one database at one moment."""

    server_version: int
    tables: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int | None] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_rows"] = self.total_rows
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        return cls(
            server_version=int(data["server_version"]),
            tables={k: int(v) for k, v in data["tables"].items()},
            sequences={k: (None if v is None else int(v)) for k, v in data["sequences"].items()},
            objects={k: int(v) for k, v in data["objects"].items()},
            extensions=list(data["extensions"]),
        )


def take_inventory_in(
    conn: psycopg2.extensions.connection, *, rows: dict[str, int] | None = None
) -> Inventory:
    """Count everything through an open connection, inside its current transaction
    (`rows`: row counts already known, e.g. from a fingerprint of the same snapshot)."""
    inv = Inventory(server_version=int(conn.server_version))
    with conn.cursor() as cur:
        cur.execute(_TABLES)
        tables = cur.fetchall()
        for schema, name, _kind in tables:
            if rows is not None:
                inv.tables[qualified(schema, name)] = rows.get(qualified(schema, name), 0)
                continue
            cur.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(name)
                )
            )
            row = cur.fetchone()
            inv.tables[qualified(schema, name)] = int(row[0]) if row else 0
        cur.execute(_SEQUENCES)
        for schema, name, value in cur.fetchall():
            inv.sequences[qualified(schema, name)] = None if value is None else int(value)
        for key, query in _OBJECT_COUNTS.items():
            cur.execute(query)
            row = cur.fetchone()
            inv.objects[key] = int(row[0]) if row else 0
        cur.execute("SELECT extname FROM pg_extension ORDER BY 1")
        inv.extensions = [r[0] for r in cur.fetchall()]
    return inv


def take_inventory(
    url: str | PgURL,
    *,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
    snapshot: str | None = None,
) -> Inventory:
    """An inventory of `url` in one consistent snapshot (optionally an exported one)."""
    pg = parse_url(url)
    with connection(
        pg, connect_timeout=connect_timeout, statement_timeout=statement_timeout, autocommit=False
    ) as conn:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            if snapshot:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        inv = take_inventory_in(conn)
        conn.rollback()
    return inv


@dataclass
class VerificationReport:
    """The outcome of comparing a copy with its source (fingerprints of both)."""

    equal: bool
    differences: list[str]
    source: Fingerprint
    target: Fingerprint
    seconds: float = 0.0

    @property
    def mode(self) -> str:
        return "content" if self.source.mode == self.target.mode == "content" else "counts"

    @property
    def tables_compared(self) -> int:
        return len(self.source.tables)

    @property
    def rows_compared(self) -> int:
        return self.source.total_rows

    def compared(self) -> dict[str, Any]:
        """What was compared: per table how, plus the counts of everything else."""
        content = self.mode == "content"
        tables = {}
        for name, s in self.source.tables.items():
            t = self.target.tables.get(name)
            tables[name] = {
                "rows": s.rows,
                "by": "checksum" if content else "count",
                "key_ranges": len(s.chunks),
                "equal": t is not None
                and t.rows == s.rows
                and (not content or t.checksum == s.checksum),
            }
        return {
            "mode": self.mode,
            "tables": tables,
            "sequences": len(self.source.sequences),
            "definitions": {k: len(v) for k, v in sorted(self.source.definitions.items())},
            "database_settings": len(self.source.settings),
            "large_objects": len(self.source.large_objects),
            "extensions": len(self.source.extensions),
        }

    def summary(self) -> str:
        if self.equal:
            what = "contents" if self.mode == "content" else "row counts"
            objects = sum(len(v) for v in self.source.definitions.values())
            return (
                f"copy verified by {self.mode}: {self.tables_compared} tables ({self.rows_compared}"
                f" rows, {what} equal), {len(self.source.sequences)} sequences, {objects} object "
                f"definitions, {len(self.source.settings)} database settings, "
                f"{len(self.source.large_objects)} large objects equal in {self.seconds:.1f}s"
            )
        shown = "; ".join(self.differences[:5])
        more = f" (+{len(self.differences) - 5} more)" if len(self.differences) > 5 else ""
        count = len(self.differences)
        ways = "1 way" if count == 1 else f"{count} ways"
        return f"copy differs from source in {ways}: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "mode": self.mode,
            "differences": self.differences,
            "tables": self.tables_compared,
            "rows": self.rows_compared,
            "seconds": round(self.seconds, 3),
            "compared": self.compared(),
        }


def compare(source: Fingerprint, target: Fingerprint, seconds: float = 0.0) -> VerificationReport:
    """The report of every way `target` differs from `source`."""
    diffs = compare_fingerprints(source, target)
    return VerificationReport(not diffs, diffs, source, target, seconds)


@dataclass
class InventoryComparison:
    """Row count, sequence and object count differences between two inventories."""

    differences: list[str]

    @property
    def equal(self) -> bool:
        return not self.differences


def compare_inventories(source: Inventory, target: Inventory) -> InventoryComparison:
    """Row count, sequence and object count differences (the weaker, older check)."""
    diffs: list[str] = []
    for name in sorted(set(source.tables) | set(target.tables)):
        s, t = source.tables.get(name), target.tables.get(name)
        if s != t:
            diffs.append(f"table {name}: {s} rows on source, {t} on target")
    for name in sorted(set(source.sequences) | set(target.sequences)):
        if source.sequences.get(name) != target.sequences.get(name):
            diffs.append(
                f"sequence {name}: {source.sequences.get(name)} on source, "
                f"{target.sequences.get(name)} on target"
            )
    for key in sorted(set(source.objects) | set(target.objects)):
        s_n, t_n = source.objects.get(key, 0), target.objects.get(key, 0)
        if s_n != t_n:
            diffs.append(f"{key}: {s_n} on source, {t_n} on target")
    missing_ext = sorted(set(source.extensions) - set(target.extensions))
    if missing_ext:
        diffs.append(f"extensions missing on target: {', '.join(missing_ext)}")
    return InventoryComparison(diffs)


def fingerprint_pair(
    source_url: str | PgURL,
    target_url: str | PgURL,
    *,
    jobs: int = 2,
    mode: str = "content",
    source_snapshot: str | None = None,
    source_fingerprint: Fingerprint | None = None,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
) -> tuple[Fingerprint, Fingerprint]:
    """Both sides' fingerprints, taken at the same time (the target's key ranges follow
    the source's). A stored `source_fingerprint` (e.g. the backup's) is used as is."""
    if source_fingerprint is not None:
        target = fingerprint_like(
            target_url,
            source_fingerprint,
            jobs=jobs,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        return source_fingerprint, target
    plan = key_ranges(source_url, jobs=jobs, mode=mode, connect_timeout=connect_timeout)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
        futures = [
            pool.submit(
                take_fingerprint,
                url,
                snapshot=snapshot,
                jobs=jobs,
                mode=mode,
                like=plan,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
            )
            for url, snapshot in ((source_url, source_snapshot), (target_url, None))
        ]
        source, target = (f.result() for f in futures)
    return source, target


def verify_copy(
    source_url: str | PgURL,
    target_url: str | PgURL,
    *,
    jobs: int = 2,
    mode: str = "content",
    connect_timeout: float = 30,
    command_timeout: float = 600,
    source_snapshot: str | None = None,
    source_fingerprint: Fingerprint | None = None,
) -> VerificationReport:
    """Compare target with source by content: in `source_snapshot` (the copy's) when given,
    or against a fingerprint taken earlier (e.g. in the backup's snapshot)."""
    started = time.monotonic()
    source, target = fingerprint_pair(
        source_url,
        target_url,
        jobs=jobs,
        mode=mode,
        source_snapshot=source_snapshot,
        source_fingerprint=source_fingerprint,
        connect_timeout=connect_timeout,
        statement_timeout=command_timeout,
    )
    report = compare(source, target, time.monotonic() - started)
    log.debug("%s", report.summary())  # the caller shows (or raises) the result
    return report
