"""Sealing a database: no session but ours, so nothing can change it while we hold it.

Why: a proof that a database is unchanged (a fingerprint) is only worth something up to the
moment it was taken. A client with its own connection could commit a row right after it and
right before the database is deleted, and that row would be lost. Sealed, the database
takes no new session but the ones this object holds, and every other session is gone, so
what the proof saw is what gets deleted.

How, as a non-superuser owner (as on Render): ``ALTER DATABASE ... CONNECTION LIMIT n``, n
being the number of sessions we hold (PostgreSQL counts a connecting session among the
database's sessions: with n held, the next one is refused with "too many connections").
The owner may set it from inside the database; ``ALLOW_CONNECTIONS false`` would need a
connection to another database, and a run killed while sealed would leave the database shut
to its own role. With a limit of n, a killed run's sessions end with its process, so the
limit alone lets the next run back in to lift it.

Sessions of our own role are ended (pg_terminate_backend). Sessions of other roles cannot
be ended by a non-superuser: they are reported (`SealError`) and the caller must not rely on
the seal. Superusers ignore connection limits and are not counted: on Render they are the
platform's (monitoring, backups), never the app's, and counting them would refuse every
deletion there.
Sessions without a role (autovacuum and other background workers) are not clients and are
not counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from render_rotator.errors import DatabaseError
from render_rotator.postgres.connect import connect, connection, sql_error
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

#: -1: PostgreSQL's "no limit"
NO_LIMIT = -1

# Every session on this database but ours: the ones pg_stat_activity shows with a role
# (clients; a non-member's row hides its backend_type, so the role is what tells), and the
# ones still starting up, which hold a lock on the database before they show there.
_OTHERS = """
SELECT a.pid, a.usename, a.backend_type, pg_has_role(a.usesysid, 'MEMBER') AS ours
FROM pg_stat_activity a
WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.usename IS NOT NULL AND NOT a.pid = ANY(%(ours)s)
  AND NOT COALESCE((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
UNION
SELECT l.pid, NULL, 'starting', false FROM pg_locks l
WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass
  AND l.objid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid IS NOT NULL AND NOT l.pid = ANY(%(ours)s)
ORDER BY 1
"""


@dataclass(frozen=True)
class Session:
    """Another session on the sealed database."""

    pid: int
    user: str | None  # None: still starting up
    kind: str | None  # backend_type (None: hidden, another role's)
    ours: bool  # our role's (or one we are a member of): we may end it

    def describe(self) -> str:
        who = f"role {self.user}" if self.user else "a session still connecting"
        return f"pid {self.pid} ({who})"


class SealError(DatabaseError):
    """The database could not be sealed, or a session other than ours is on it."""

    def __init__(self, message: str, *, hint: str | None = None, sessions: list[Session]) -> None:
        super().__init__(message, hint=hint)
        self.sessions = sessions


def _execute(pg: PgURL, cur: psycopg2.extensions.cursor, stmt: Any, args: Any = None) -> None:
    try:
        cur.execute(stmt, args)
    except psycopg2.Error as exc:
        raise sql_error(pg, exc) from None


def _read_limit(pg: PgURL, conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        _execute(pg, cur, "SELECT datconnlimit FROM pg_database WHERE datname = current_database()")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _set_limit(pg: PgURL, conn: psycopg2.extensions.connection, limit: int) -> None:
    """ALTER DATABASE <this one> CONNECTION LIMIT `limit`, also on a read-only database."""
    conn.autocommit = True
    with conn.cursor() as cur:
        _execute(pg, cur, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        _execute(
            pg,
            cur,
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                sql.Identifier(pg.dbname), sql.Literal(int(limit))
            ),
        )


def connection_limit(
    url: str | PgURL, *, connect_timeout: float = 30, statement_timeout: float | None = 60
) -> int:
    """The database's connection limit now (-1: none)."""
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout, statement_timeout=statement_timeout) as c:
        return _read_limit(pg, c)


def restore_limit(
    url: str | PgURL,
    limit: int,
    *,
    connect_timeout: float = 30,
    statement_timeout: float | None = 60,
) -> None:
    """Put the connection limit back to `limit` over a new session (a run killed while the
    database was sealed: its sessions ended with it, so there is room for this one)."""
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout, statement_timeout=statement_timeout) as c:
        _set_limit(pg, c, limit)


class SealedDatabase:
    """A database whose connection limit is the number of sessions held here.

    `sessions[0]` is the one that sealed it; all of them stay open until `close()`, so no
    one else can take a slot. `restore()` lifts the seal (the limit it had before).
    """

    def __init__(
        self, url: PgURL, sessions: list[psycopg2.extensions.connection], previous_limit: int
    ) -> None:
        self.url = url
        self.sessions = sessions
        self.previous_limit = previous_limit
        self.pids = [int(s.info.backend_pid) for s in sessions]
        self.sealed = False

    @property
    def main(self) -> psycopg2.extensions.connection:
        return self.sessions[0]

    def seal(self) -> None:
        _set_limit(self.url, self.main, len(self.sessions))
        self.sealed = True
        log.info(
            "sealed %s: connection limit %d (the sessions of this run)",
            self.url.redacted(),
            len(self.sessions),
        )

    def others(self) -> list[Session]:
        """Every session on the database that is not one of ours, read now."""
        self.main.autocommit = True
        with self.main.cursor() as cur:
            _execute(self.url, cur, _OTHERS, {"ours": self.pids})
            return [Session(int(p), u, k, bool(o)) for p, u, k, o in cur.fetchall()]

    def end_others(self, wait: float = 10.0) -> list[Session]:
        """End our role's other sessions and wait until they are gone (up to `wait`
        seconds); returns the sessions still there (other roles', which we cannot end)."""
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            left = self.others()
            mine = [s.pid for s in left if s.ours]
            if mine:
                with self.main.cursor() as cur:
                    for pid in mine:
                        try:
                            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        except psycopg2.Error as exc:  # gone meanwhile, or not ours after all
                            log.info("could not end session %d: %s", pid, exc)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def confirm_alone(self) -> None:
        """Raise SealError unless every session of ours is alive and no other exists."""
        for session in self.sessions:
            try:
                with session.cursor() as cur:
                    cur.execute("SELECT 1")
            except psycopg2.Error as exc:
                raise SealError(
                    f"a session sealing {self.url.redacted()} was lost: {exc}".strip(),
                    sessions=[],
                ) from None
        left = self.others()
        if left:
            raise SealError(
                f"{_describe(left)} connected to {self.url.redacted()} while it was sealed",
                sessions=left,
            )

    def restore(self) -> None:
        """Lift the seal: the limit it had before, over our own session (a new one if it
        was lost)."""
        try:
            _set_limit(self.url, self.main, self.previous_limit)
        except (psycopg2.Error, DatabaseError) as exc:
            log.info("restoring the limit over a new session (%s)", exc)
            self.close()
            restore_limit(self.url, self.previous_limit)
        self.sealed = False
        log.info("unsealed %s (connection limit %d)", self.url.redacted(), self.previous_limit)

    def close(self) -> None:
        for session in self.sessions:
            try:
                session.close()
            except psycopg2.Error as exc:
                log.debug("closing a sealing session: %s", exc)


def _describe(sessions: list[Session]) -> str:
    shown = ", ".join(s.describe() for s in sessions[:5])
    more = f" and {len(sessions) - 5} more" if len(sessions) > 5 else ""
    return f"{len(sessions)} other session(s): {shown}{more}"


def open_sealed(
    url: str | PgURL,
    *,
    sessions: int = 1,
    connect_timeout: float = 30,
    statement_timeout: float | None = 600,
) -> SealedDatabase:
    """Open `sessions` sessions on the database (not sealed yet: `SealedDatabase.seal`).

    The caller records `previous_limit` somewhere that survives a crash before sealing."""
    pg = parse_url(url)
    held: list[psycopg2.extensions.connection] = []
    try:
        for _ in range(max(1, sessions)):
            held.append(
                connect(pg, connect_timeout=connect_timeout, statement_timeout=statement_timeout)
            )
        return SealedDatabase(pg, held, _read_limit(pg, held[0]))
    except BaseException:
        for conn in held:
            conn.close()
        raise


def describe_sessions(sessions: list[Session]) -> str:
    """`n other session(s): pid 1 (role x), ...` for messages."""
    return _describe(sessions)


__all__ = [
    "NO_LIMIT",
    "SealError",
    "SealedDatabase",
    "Session",
    "connection_limit",
    "describe_sessions",
    "open_sealed",
    "restore_limit",
]
