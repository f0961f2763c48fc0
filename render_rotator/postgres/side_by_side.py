"""Two readers of one database, side by side, in one snapshot: a backup beside a copy.

`side_by_side(url, beside=(name, fn), main=(name, fn))` opens a holder session on `url`
that exports a snapshot, runs `beside` in a helper thread and `main` in the calling thread,
each called as ``fn(snapshot, stop)``: each imports the snapshot first thing (then exports
it again for its own helpers), so both read exactly the same state of the database. The
holder's transaction stays open until both have returned, so neither can miss it however
late its thread starts.

The first failure stops the other side (`stop` is set: a QueryCancel, which also cancels
the queries it watches) and is raised as `SideFailed`, naming the side it came from, once
both have returned; an error the stop itself caused on the other side is not the cause
and is dropped. Ctrl-C (or a signal turned into it) in the calling thread stops the helper
too and propagates as is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg2

from render_rotator.postgres.catalog import export_snapshot
from render_rotator.postgres.connect import QueryCancel, connect, sql_error
from render_rotator.postgres.url import PgURL, parse_url

#: what each side runs: ``fn(snapshot id, stop)``
SideFn = Callable[[str, QueryCancel], Any]


class SideFailed(Exception):
    """One side failed (the other was stopped): `name` says which, `error` is its error."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(str(error))
        self.name = name
        self.error = error


@dataclass(frozen=True)
class Both:
    """What each side returned, and how long each took (seconds)."""

    beside: Any
    main: Any
    beside_seconds: float
    main_seconds: float


@contextlib.contextmanager
def exported_snapshot(
    url: str | PgURL, *, connect_timeout: float, statement_timeout: float | None
) -> Iterator[str]:
    """A read-only REPEATABLE READ transaction held open while the block runs; yields the
    id of its exported snapshot."""
    pg = parse_url(url)
    conn = connect(
        pg, connect_timeout=connect_timeout, statement_timeout=statement_timeout, autocommit=False
    )
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        try:
            with conn.cursor() as cur:
                # the holder idles while the sides work: a server-side idle timeout must
                # not end it before both have imported its snapshot
                cur.execute("SET idle_in_transaction_session_timeout = 0")
                snapshot = export_snapshot(cur)
        except psycopg2.Error as exc:
            raise sql_error(pg, exc) from None
        yield snapshot
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        conn.close()


def side_by_side(
    url: str | PgURL,
    *,
    beside: tuple[str, SideFn],
    main: tuple[str, SideFn],
    connect_timeout: float = 30,
    statement_timeout: float | None = None,
) -> Both:
    """Run both sides in one exported snapshot of `url` (see the module docstring)."""
    beside_name, beside_fn = beside
    main_name, main_fn = main
    stop_beside, stop_main = QueryCancel(), QueryCancel()
    first: list[tuple[str, BaseException]] = []
    lock = threading.Lock()

    def failed(name: str, exc: BaseException, other: QueryCancel) -> None:
        with lock:
            if not first:
                first.append((name, exc))
        other.set()

    def run_beside(snapshot: str) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            return beside_fn(snapshot, stop_beside), time.monotonic() - started
        except BaseException as exc:
            failed(beside_name, exc, stop_main)
            raise

    main_out: tuple[Any, float] | None = None
    beside_out: tuple[Any, float] | None = None
    with (
        exported_snapshot(
            url, connect_timeout=connect_timeout, statement_timeout=statement_timeout
        ) as snapshot,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=beside_name) as pool,
    ):
        helper = pool.submit(run_beside, snapshot)
        try:
            started = time.monotonic()
            try:
                main_out = main_fn(snapshot, stop_main), time.monotonic() - started
            except Exception as exc:  # noqa: BLE001 - raised below as SideFailed
                failed(main_name, exc, stop_beside)
            with contextlib.suppress(Exception):  # recorded by run_beside
                beside_out = helper.result()
        except BaseException:
            stop_beside.set()  # Ctrl-C: the pool's exit waits for the stopped helper
            raise
    if first:
        name, error = first[0]
        raise SideFailed(name, error) from error
    assert main_out is not None and beside_out is not None
    return Both(
        beside=beside_out[0],
        main=main_out[0],
        beside_seconds=beside_out[1],
        main_seconds=main_out[1],
    )


__all__ = ["Both", "SideFailed", "exported_snapshot", "side_by_side"]
