"""How a fingerprint hashes one row, in SQL, by the values of its columns.

A table's checksum is the sum of its rows' 64-bit hashes, so each row's hash must mix all of
its columns: a hash linear in its columns' hashes would let values swapped between two rows
cancel out in the sum. Two methods hash by value (PostgreSQL 14+), both only for tables
whose every column has an exact hash (equal hash input means the same value and text form):

- "chained" (new fingerprints): each column is hashed by its own type's extended hash
  function, seeded with the hash of the columns before it; nullable columns contribute a
  null bitmap hashed last. No record is formed and nothing is printed for integers, uuids,
  booleans and text: on a (bigint, int, int) table of 7 M rows, 0.5 s of backend CPU
  against 1.5 s for "columns" (PostgreSQL 18 here).
- "columns" (kept to compare with fingerprints stored that way):
  `hash_record_extended(ROW(values))` (linear: h * 31 + next), hashed again through its text.

Column types and how their values enter the hash:

- integers, oid, boolean, uuid: their own hash; a bigint by both of its halves (bigint's
  hash folds 64 bits into 32);
- text, char(n): their bytes under the "C" collation (a nondeterministic collation's hash
  would make different strings equal; char(n) is stored padded, so equal means same bytes);
- varchar, numeric, jsonb, json, floats, intervals, dates, times and timestamps: their own
  text form (numeric 1.0 = 1.00 and float -0 = 0 under their own hashes, which are not
  exact; dates and timestamps print the same under the fingerprint's session settings);
- bytea: by value in "columns" only; a table with bytea, or with more than 63 nullable
  columns, is not "chained".
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

# Types hashed by their own (exact) hash function inside hash_record_extended ("columns").
VALUE_TYPES = frozenset(
    {
        "smallint", "integer", "bigint", "boolean", "uuid", "date",
        "timestamp without time zone", "timestamp with time zone", "oid", "bytea",
    }
)  # fmt: skip
# Types whose own hash is not exact: hashed by their text form (their output function).
TEXT_FORM_TYPES = frozenset(
    {
        "numeric", "jsonb", "json", "real", "double precision", "interval",
        "time without time zone", "time with time zone",
    }
)  # fmt: skip
# "chained": a column of these types -> its hash, seeded with the hash so far; `{v}` is the
# value (never NULL here: nullable columns are coalesced, the null bitmap tells them apart)
_CHAINED = {
    "smallint": ("hashint2extended({v}, {h})", "0::pg_catalog.int2"),
    "integer": ("hashint4extended({v}, {h})", "0"),
    "oid": ("hashoidextended({v}, {h})", "0::pg_catalog.oid"),
    "boolean": ("hashint4extended({v}::pg_catalog.int4, {h})", "false"),
    "uuid": ("uuid_hash_extended({v}, {h})", "'00000000-0000-0000-0000-000000000000'::uuid"),
    # bigint's own hash folds its halves together (hi ^ lo): its high half is hashed too
    "bigint": (
        "hashint4extended(({v} >> 32)::pg_catalog.int4, hashint8extended({v}, {h}))",
        "0::pg_catalog.int8",
    ),
    "text": ('hashtextextended({v} COLLATE "C", {h})', "''"),
}
_CHAINED_TEXT_FORM = TEXT_FORM_TYPES | {
    "character varying", "date", "timestamp without time zone", "timestamp with time zone"
}  # fmt: skip
MAX_NULLABLE = 63  # one bigint of null flags

_COLUMNS = """
SELECT a.attrelid, a.attname, a.atttypid::regtype::text, a.atttypmod, a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str
    typmod: int
    notnull: bool

    @property
    def ref(self) -> sql.Composable:
        return sql.SQL("r.{}").format(sql.Identifier(self.name))


def _record_part(column: Column) -> sql.Composable | None:
    """One column's part of a "columns" ROW(...); None when its type has no exact hash."""
    if column.type_name in VALUE_TYPES:
        return column.ref
    if column.type_name == "text" or (column.type_name == "character" and column.typmod > 0):
        return sql.SQL('{} COLLATE "C"').format(column.ref)
    if column.type_name == "character varying" or column.type_name in TEXT_FORM_TYPES:
        return sql.SQL('{}::pg_catalog.text COLLATE "C"').format(column.ref)
    return None


def columns_hash(columns: list[Column]) -> sql.Composable | None:
    """The "columns" row hash; None when a column's type has no exact hash."""
    parts = [_record_part(c) for c in columns]
    if not parts or any(p is None for p in parts):
        return None
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(p for p in parts if p is not None))
    # hash_record_extended combines its columns' hashes linearly (h * 31 + next), so a sum
    # of them would miss values swapped between rows; hashing its result again (as text: a
    # full 64-bit hash) mixes each row's columns together
    return sql.SQL("hashtextextended(hash_record_extended({}, 0)::pg_catalog.text, 0)").format(row)


def _chained_step(column: Column, seed: sql.Composable) -> sql.Composable | None:
    value: sql.Composable = column.ref
    if column.type_name == "character" and column.typmod > 0:
        template, empty = 'hashbpcharextended({v} COLLATE "C", {h})', "''::pg_catalog.bpchar"
    elif column.type_name in _CHAINED:
        template, empty = _CHAINED[column.type_name]
    elif column.type_name in _CHAINED_TEXT_FORM:
        template, empty = _CHAINED["text"]
        value = sql.SQL("{}::pg_catalog.text").format(value)
    else:
        return None
    if not column.notnull:
        value = sql.SQL("coalesce({}, {})").format(value, sql.SQL(empty))
    return sql.SQL(template).format(v=value, h=seed)


def chained_hash(columns: list[Column]) -> sql.Composable | None:
    """The "chained" row hash; None when the table does not allow it (see the module)."""
    nullable = [c for c in columns if not c.notnull]
    if not columns or len(nullable) > MAX_NULLABLE:
        return None
    running: sql.Composable = sql.SQL("0")
    for column in columns:
        step = _chained_step(column, running)
        if step is None:
            return None
        running = step
    if not nullable:
        return running
    flags = sql.SQL(" | ").join(
        sql.SQL("(({} IS NULL)::pg_catalog.int4::pg_catalog.int8 << {})").format(
            c.ref, sql.Literal(i)
        )
        for i, c in enumerate(nullable)
    )
    bigint, _ = _CHAINED["bigint"]
    return sql.SQL(bigint).format(v=sql.SQL("({})").format(flags), h=running)


def row_hashes(
    cur: psycopg2.extensions.cursor, oids: list[int]
) -> dict[int, dict[str, sql.Composable]]:
    """For each table in `oids`: its row hash by each method its columns allow."""
    cur.execute(_COLUMNS, (oids,))
    columns: dict[int, list[Column]] = {}
    for relid, name, type_name, typmod, notnull in cur.fetchall():
        columns.setdefault(int(relid), []).append(
            Column(str(name), str(type_name), int(typmod), bool(notnull))
        )
    found: dict[int, dict[str, sql.Composable]] = {}
    for oid, cols in columns.items():
        methods = {"columns": columns_hash(cols), "chained": chained_hash(cols)}
        usable = {method: expr for method, expr in methods.items() if expr is not None}
        if usable:
            found[oid] = usable
    return found
