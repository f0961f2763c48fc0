"""Per-session server settings for bulk loads, and ANALYZE spread over parallel sessions.

A copy may only tune its own sessions (Render gives us no server configuration), so every
setting travels in the libpq `options` of the connection URL: it reaches psql, pg_restore and
their parallel workers alike, and never needs a secret on the command line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import replace

from psycopg2 import sql

from render_rotator.errors import CommandTimeoutError, DatabaseError
from render_rotator.postgres.catalog import USER_SCHEMA, not_extension_member
from render_rotator.postgres.connect import connection
from render_rotator.postgres.url import PgURL

log = logging.getLogger("render_rotator.postgres")

_USER_RELATIONS = f"""
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't'
      AND {USER_SCHEMA} AND {not_extension_member("pg_class", "c.oid")}
      {{only}}
    ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2
"""
_PARENTS_AND_VIEWS = "AND (c.relkind IN ('p', 'm') OR c.relhassubclass)"


def _escape_option(value: str) -> str:
    """libpq splits `options` on spaces; a backslash keeps one literal."""
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def with_settings(url: PgURL, settings: Mapping[str, str | int]) -> PgURL:
    """`url` whose sessions start with `SET key = value` for each setting (via `options`).

    Each setting is written `-cname=value`, without a space, so that a single setting
    survives any URL encoding; pass several only through `tool_dsn()` or psycopg2.
    """
    params = dict(url.params)
    parts = [params.get("options", "").strip()]
    parts += [f"-c{_escape_option(f'{k}={v}')}" for k, v in settings.items()]
    params["options"] = " ".join(p for p in parts if p)
    return replace(url, params=tuple(params.items()))


def tool_dsn(url: PgURL) -> str:
    """The password-less URL for a tool's argv, with spaces in parameters encoded as %20.

    libpq percent-decodes URL parameters but does not turn `+` into a space, while
    `urlencode` writes spaces as `+`; in the query part every `+` stands for a space
    (a literal plus is written %2B).
    """
    base, sep, query = url.public_url().partition("?")
    return base + sep + query.replace("+", "%20")


def with_application_name(url: PgURL, name: str) -> PgURL:
    """Label our sessions so an operator can tell them apart in pg_stat_activity."""
    params = dict(url.params)
    params.setdefault("application_name", name)
    return replace(url, params=tuple(params.items()))


def analyze_parallel(
    url: PgURL,
    *,
    jobs: int,
    connect_timeout: float,
    timeout: float,
    only_parents_and_views: bool = False,
) -> int:
    """ANALYZE every user table and materialized view over `jobs` sessions, largest first.

    Fresh statistics make the application fast right after cutover; one session per core
    makes them cheap. `only_parents_and_views` limits it to partitioned and inheritance
    parents and materialized views (for a caller that analyzed each table already).
    Returns the number of relations analyzed.
    """
    deadline = time.monotonic() + timeout
    with (
        connection(url, connect_timeout=connect_timeout, statement_timeout=timeout) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            _USER_RELATIONS.format(only=_PARENTS_AND_VIEWS if only_parents_and_views else "")
        )
        relations = [(str(s), str(n)) for s, n in cur.fetchall()]
    work: queue.Queue[tuple[str, str]] = queue.Queue()
    for rel in relations:
        work.put(rel)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            remaining = max(1.0, deadline - time.monotonic())
            with (
                connection(
                    url, connect_timeout=connect_timeout, statement_timeout=remaining
                ) as conn,
                conn.cursor() as cur,
            ):
                while not errors:
                    try:
                        schema, name = work.get_nowait()
                    except queue.Empty:
                        return
                    if time.monotonic() > deadline:
                        raise CommandTimeoutError(
                            f"ANALYZE did not finish within {timeout:g}s",
                            hint="raise command_timeout",
                        )
                    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, name=f"analyze-{i}", daemon=True)
        for i in range(max(1, min(jobs, len(relations))))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        exc = errors[0]
        if isinstance(exc, DatabaseError):
            raise exc
        raise DatabaseError(f"ANALYZE of {url.redacted()} failed: {exc}") from exc
    return len(relations)
