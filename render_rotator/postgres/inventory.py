"""What a database holds, counted exactly, and the comparison that proves a copy complete.

An inventory is taken in one REPEATABLE READ snapshot: exact row counts per table, every
sequence's value, and counts of schema objects. Two inventories are equal only when the
copy holds the same rows and the same objects; differences are listed one per line.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from render_rotator.postgres.connect import connection
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

_USER_SCHEMAS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""
_NOT_FROM_EXTENSION = """
    NOT EXISTS (SELECT 1 FROM pg_depend d
                WHERE d.classid = {catalog}::regclass AND d.objid = {oid} AND d.deptype = 'e')
"""

_OBJECT_COUNTS: dict[str, str] = {
    "schemas": f"""SELECT count(*) FROM pg_namespace n WHERE {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_namespace'", oid="n.oid")}""",
    "tables": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    "views": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    "materialized_views": f"""SELECT count(*) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND {_USER_SCHEMAS}""",
    "indexes": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('i', 'I') AND {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    "sequences": f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    # PostgreSQL 18 records NOT NULL as constraints (contype 'n'); older servers do not, so
    # they are left out so counts compare across majors
    "constraints": f"""SELECT count(*) FROM pg_constraint k
        JOIN pg_namespace n ON n.oid = k.connamespace WHERE {_USER_SCHEMAS} AND k.contype <> 'n'
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_constraint'", oid="k.oid")}""",
    "functions": f"""SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}""",
    "triggers": f"""SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal
        AND {_USER_SCHEMAS}""",
    "types": f"""SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {_USER_SCHEMAS}
        AND {_NOT_FROM_EXTENSION.format(catalog="'pg_type'", oid="t.oid")}""",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
}

# Row counts: tables, and materialized views holding data (one created WITH NO DATA cannot
# be read, and must arrive unpopulated: populated on one side only, it shows as a difference).
_TABLES = f"""
    SELECT n.nspname, c.relname, c.relkind FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) AND {_USER_SCHEMAS}
    AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    ORDER BY 1, 2
"""

_SEQUENCES = """
    SELECT schemaname, sequencename, last_value FROM pg_sequences
    WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""


def qualified(schema: str, name: str) -> str:
    """`schema.name`, quoted where PostgreSQL would need it, for reports."""

    def q(part: str) -> str:
        if part.isidentifier() and part == part.lower() and part.isascii():
            return part
        return '"' + part.replace('"', '""') + '"'

    return f"{q(schema)}.{q(name)}"


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


def take_inventory_in(conn: psycopg2.extensions.connection) -> Inventory:
    """Count everything through an open connection, inside its current transaction."""
    inv = Inventory(server_version=int(conn.server_version))
    with conn.cursor() as cur:
        cur.execute(_TABLES)
        tables = cur.fetchall()
        for schema, name, _kind in tables:
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
    """The outcome of comparing a copy with its source."""

    equal: bool
    differences: list[str]
    source: Inventory
    target: Inventory

    @property
    def tables_compared(self) -> int:
        return len(self.source.tables)

    @property
    def rows_compared(self) -> int:
        return self.source.total_rows

    def summary(self) -> str:
        if self.equal:
            return (
                f"copy verified: {self.tables_compared} tables, {self.rows_compared} rows, "
                f"{len(self.source.sequences)} sequences and all object counts equal"
            )
        shown = "; ".join(self.differences[:5])
        more = f" (+{len(self.differences) - 5} more)" if len(self.differences) > 5 else ""
        count = len(self.differences)
        ways = "1 way" if count == 1 else f"{count} ways"
        return f"copy differs from source in {ways}: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "differences": self.differences,
            "tables": self.tables_compared,
            "rows": self.rows_compared,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
        }


def compare_inventories(source: Inventory, target: Inventory) -> VerificationReport:
    """List every way `target` differs from `source`."""
    diffs: list[str] = []
    for name in sorted(set(source.tables) | set(target.tables)):
        if name not in target.tables:
            diffs.append(f"table {name}: missing on target ({source.tables[name]} rows on source)")
        elif name not in source.tables:
            diffs.append(f"table {name}: only on target ({target.tables[name]} rows)")
        elif source.tables[name] != target.tables[name]:
            diffs.append(
                f"table {name}: {source.tables[name]} rows on source, "
                f"{target.tables[name]} on target"
            )
    for name in sorted(set(source.sequences) | set(target.sequences)):
        if name not in target.sequences:
            diffs.append(f"sequence {name}: missing on target")
        elif name not in source.sequences:
            diffs.append(f"sequence {name}: only on target")
        elif source.sequences[name] != target.sequences[name]:
            diffs.append(
                f"sequence {name}: {source.sequences[name]} on source, "
                f"{target.sequences[name]} on target"
            )
    for key in sorted(set(source.objects) | set(target.objects)):
        s, t = source.objects.get(key, 0), target.objects.get(key, 0)
        if s != t:
            diffs.append(f"{key}: {s} on source, {t} on target")
    missing_ext = sorted(set(source.extensions) - set(target.extensions))
    if missing_ext:
        diffs.append(f"extensions missing on target: {', '.join(missing_ext)}")
    return VerificationReport(not diffs, diffs, source, target)


def verify_copy(
    source_url: str | PgURL,
    target_url: str | PgURL,
    *,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    source_inventory: Inventory | None = None,
) -> VerificationReport:
    """Compare target with source (or with an inventory taken earlier, e.g. at backup time)."""
    source = source_inventory or take_inventory(
        source_url, connect_timeout=connect_timeout, statement_timeout=command_timeout
    )
    target = take_inventory(
        target_url, connect_timeout=connect_timeout, statement_timeout=command_timeout
    )
    report = compare_inventories(source, target)
    log.debug("%s", report.summary())  # the caller shows (or raises) the result
    return report
