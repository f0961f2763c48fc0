"""What the catalog says, asked once: the queries every part of the engine shares.

- `USER_SCHEMA` / `not_extension_member`: which objects are the user's (everything outside
  the system schemas that no extension owns); the copy, the fingerprint, the inventory,
  ANALYZE and the size measure all use these two filters, so they always agree.
- `is_superuser`, `export_snapshot`, `import_snapshot`: asked by the copy, the seed engine
  and the restores.
- `read_source`: everything the copy needs to know about the source, read in its snapshot
  (tables with their columns and binary-safety, indexes, constraints, sequences).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extensions

from render_rotator.errors import CopyError

FIRST_NORMAL_OID = 16384
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f-]+$")

# The user's schemas: not the system's, not TOAST, not any session's temporary schema.
# (`pg_toast%` also covers pg_toast_temp_N.) Written against `pg_namespace n`.
USER_SCHEMA = """n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"""


def not_extension_member(catalog: str, oid: str) -> str:
    """SQL condition: the object (`oid`, a column expression, of catalog `catalog`, e.g.
    "pg_class") is not a member of an extension, which recreates it by itself."""
    return (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = "
        f"'{catalog}'::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )


def is_superuser(conn: Any) -> bool:
    """Whether the session's role is a superuser (some archive entries need one)."""
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cur.fetchone()
    return bool(row and row[0])


def export_snapshot(cur: Any) -> str:
    """Export the snapshot of `cur`'s REPEATABLE READ transaction, for other sessions to
    share (`SET TRANSACTION SNAPSHOT`, `pg_dump --snapshot`)."""
    cur.execute("SELECT pg_export_snapshot()")
    row = cur.fetchone()
    snapshot = str(row[0]) if row else ""
    if not _SNAPSHOT_ID.match(snapshot):
        raise CopyError(f"unexpected snapshot id {snapshot!r}")
    return snapshot


def import_snapshot(cur: Any, snapshot: str) -> None:
    """Make `cur`'s REPEATABLE READ transaction see exactly the exported `snapshot` (its
    first statement: PostgreSQL refuses the import after any query). The exporting
    transaction must still be open; once imported, this one no longer needs it."""
    if not _SNAPSHOT_ID.match(snapshot):
        raise CopyError(
            f"not a snapshot id: {snapshot!r}", hint="pass pg_export_snapshot()'s value"
        )
    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))


def qualified(schema: str, name: str) -> str:
    """`schema.name`, quoted where PostgreSQL would need it, for reports."""

    def q(part: str) -> str:
        if part.isidentifier() and part == part.lower() and part.isascii():
            return part
        return '"' + part.replace('"', '""') + '"'

    return f"{q(schema)}.{q(name)}"


def quote_ident(name: str) -> str:
    """Always-quoted identifier: correct for every name, whatever its case or characters."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


TABLES_SQL = f"""
    SELECT c.oid, n.nspname, c.relname, pg_table_size(c.oid),
           pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.relhassubclass
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND {USER_SCHEMA}
      AND {not_extension_member("pg_class", "c.oid")}
"""
_SEQUENCES_SQL = f"""
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND {USER_SCHEMA}
      AND {not_extension_member("pg_class", "c.oid")}
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
class Constraint:
    table: int
    contype: str  # p, u, x, f, c, t
    index: int  # the supporting index (for f: the referenced table's unique index)
    referenced: int  # for foreign keys: the referenced table


@dataclass
class SourceCatalog:
    """The source as the snapshot sees it; `tables` in the catalog's order."""

    tables: list[SourceTable]
    sequences: list[tuple[str, str]]
    large_objects: int
    encoding: str
    server_num: int
    index_table: dict[int, int]  # index oid -> table oid
    index_cost: dict[int, int]  # index oid -> weighted size
    constraints: dict[int, Constraint]


def read_source(conn: psycopg2.extensions.connection) -> SourceCatalog:
    """Everything the copy needs to know about the source, read inside the snapshot."""
    server_num = int(conn.server_version)
    with conn.cursor() as cur:
        cur.execute(TABLES_SQL)
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
            int(r[0]): Constraint(int(r[1]), str(r[2]), int(r[3] or 0), int(r[4] or 0))
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
    return SourceCatalog(
        tables=list(tables.values()),
        sequences=sequences,
        large_objects=large_objects,
        encoding=encoding,
        server_num=server_num,
        index_table=index_table,
        index_cost=index_cost,
        constraints=constraints,
    )


def read_sequences(
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


def lock_tables(
    conn: psycopg2.extensions.connection, tables: Sequence[SourceTable], timeout: float
) -> None:
    """ACCESS SHARE locks for the whole copy: no DDL can change a table under the workers."""
    with conn.cursor() as cur:
        cur.execute(f"SET LOCAL lock_timeout = {max(1000, int(timeout * 1000))}")
        for start in range(0, len(tables), 500):
            names = ", ".join(t.ident for t in tables[start : start + 500])
            if names:
                cur.execute(f"LOCK TABLE {names} IN ACCESS SHARE MODE")
