"""A small JSON record kept on a database itself, in its ``COMMENT ON DATABASE``.

Why there: a database's comment lives in the server's shared catalog, so it is visible to
every client of that server (another machine, another state directory), it is not user data
(no table, no schema: the copy and the verification never see it), pg_dump without
``--create`` does not carry it to another database, and it disappears with the database.
Its owner (the role Render gives the user) may set it, no superuser needed.

Updates are compare-and-set: one transaction takes a transaction-level advisory lock, reads
the comment and the server's clock, lets the caller decide, writes, commits. Two clients
updating at once are serialised by the lock, so a decision is never made on a stale read.
A comment the user had already written is kept: our record is one tagged last line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg2 import sql

from render_rotator.errors import DatabaseError
from render_rotator.postgres.connect import connection
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

TAG = "render-rotator: "
#: Advisory lock key serialising stamp updates on one database (any fixed 64-bit number).
_LOCK_KEY = 0x72656E6465727274  # "renderrt"

Stamp = dict[str, Any]
#: Given the current record (empty when none) and the server's time, return the record to
#: store (empty: remove ours) or raise to abort without writing.
Update = Callable[[Stamp, datetime], Stamp]


def split_comment(comment: str | None) -> tuple[str | None, Stamp]:
    """The user's own comment text and our record."""
    if not comment:
        return comment, {}
    head, sep, last = comment.rpartition("\n")
    line = last if sep else comment
    if not line.startswith(TAG):
        return comment, {}
    try:
        record = json.loads(line[len(TAG) :])
    except ValueError:
        return comment, {}
    if not isinstance(record, dict):
        return comment, {}
    return (head if sep else None), record


def join_comment(user: str | None, record: Stamp) -> str | None:
    line = TAG + json.dumps(record, sort_keys=True, separators=(",", ":")) if record else None
    parts = [p for p in (user, line) if p]
    return "\n".join(parts) or None


def read_stamp(url: str | PgURL, *, connect_timeout: float = 30) -> Stamp:
    """Our record on the database `url` names (empty when there is none)."""
    with connection(url, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = current_database()"
        )
        row = cur.fetchone()
    return split_comment(row[0] if row else None)[1]


def update_stamp(url: str | PgURL, update: Update, *, connect_timeout: float = 30) -> Stamp:
    """Compare-and-set our record on the database; returns what was stored.

    Runs in an explicit READ WRITE transaction, so a database frozen read-only
    (``default_transaction_read_only``) can still carry the record.
    """
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
        cur.execute("BEGIN READ WRITE")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute(
            "SELECT shobj_description(oid, 'pg_database'), now() FROM pg_database "
            "WHERE datname = current_database()"
        )
        row = cur.fetchone()
        if row is None:
            raise DatabaseError(f"database {pg.redacted()} is not in pg_database")
        user, record = split_comment(row[0])
        try:
            new = update(dict(record), row[1])
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if new != record:
            cur.execute(
                sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(pg.dbname)),
                (join_comment(user, new),),
            )
        cur.execute("COMMIT")
    return new
