"""psycopg2 connections that time out, retry only what is worth retrying, and never leak.

Transient failures (refused, timed out, server starting up, too many connections) are
retried with backoff by tenacity, all within `connect_timeout` seconds overall. Wrong
passwords, missing databases and a full disk fail at once with a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from render_rotator.errors import (
    AuthenticationError,
    ConnectError,
    DatabaseError,
    DatabaseNotFoundError,
)
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

_TRANSIENT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "connection reset",
    "no route to host",
    "network is unreachable",
    "too many connections",
    "remaining connection slots are reserved",
    "could not receive data from server",
    "ssl syscall error",
)
_AUTH = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf rejects",
    "no pg_hba.conf entry",
)
_FATAL = ("no space left on device", "disk full", "could not extend file")


class TransientConnectError(ConnectError):
    """A connection failure that may go away if we try again."""


def classify_connect_error(url: PgURL, exc: Exception) -> DatabaseError:
    """Turn a psycopg2 connection failure into our error type, secrets removed."""
    text = url.scrub(str(exc).strip())
    first = text.splitlines()[0] if text else type(exc).__name__
    low = text.lower()
    where = url.redacted()
    if "no pg_hba.conf entry" in low and "no encryption" in low:
        return AuthenticationError(
            f"{where} accepts only TLS connections, and this one was made without: {first}",
            hint="drop sslmode=disable/allow from the URL (Render's external URLs need "
            "sslmode=require)",
        )
    if any(p in low for p in _AUTH) or ("role" in low and "does not exist" in low):
        return AuthenticationError(
            f"authentication failed for {where}: {first}",
            hint="check the user name and password in the URL",
        )
    if "database" in low and "does not exist" in low:
        return DatabaseNotFoundError(
            f"database {url.dbname!r} does not exist on {url.host}:{url.port}",
            hint="check the database name at the end of the URL",
        )
    if any(p in low for p in _FATAL):
        return DatabaseError(f"{where}: the server is out of disk space: {first}")
    if "could not translate host name" in low or "name or service not known" in low:
        return ConnectError(
            f"cannot resolve host {url.host!r} of {where}",
            hint="check the host name in the URL",
        )
    if any(p in low for p in _TRANSIENT):
        return TransientConnectError(f"cannot connect to {where}: {first}")
    return ConnectError(f"cannot connect to {where}: {first}")


def _log_retry(url: PgURL) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning(
            "connection to %s failed (attempt %d: %s); retrying in %.1fs",
            url.redacted(),
            state.attempt_number,
            exc,
            wait,
        )

    return before_sleep


def connect(
    url: str | PgURL,
    *,
    connect_timeout: float = 30,
    statement_timeout: float | None = None,
    autocommit: bool = True,
    application_name: str = "render-rotator",
) -> psycopg2.extensions.connection:
    """Open a connection, retrying transient failures until `connect_timeout` runs out."""
    pg = parse_url(url)
    deadline = time.monotonic() + connect_timeout
    options = []
    if statement_timeout:
        options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
        # a lock wait ends a little earlier, so that it is reported as what it is (another
        # session's open transaction), not as a slow statement
        options.append(f"-c lock_timeout={max(1, int(statement_timeout * 950))}")

    def attempt() -> psycopg2.extensions.connection:
        remaining = max(2.0, deadline - time.monotonic())
        kwargs = pg.psycopg2_kwargs(connect_timeout=min(remaining, connect_timeout))
        kwargs.setdefault("application_name", application_name)
        if options:
            kwargs["options"] = " ".join(options)
        try:
            conn = psycopg2.connect(**kwargs)
        except psycopg2.Error as exc:
            raise classify_connect_error(pg, exc) from None
        conn.autocommit = autocommit
        return conn

    retrying = Retrying(
        stop=stop_after_delay(max(0.0, connect_timeout - 0.5)),
        wait=wait_random_exponential(multiplier=0.5, max=3.0),
        retry=retry_if_exception(lambda e: isinstance(e, TransientConnectError)),
        before_sleep=_log_retry(pg),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TransientConnectError as exc:
        raise ConnectError(
            f"{exc.message} (gave up after {connect_timeout:g}s)",
            hint="check the host, port and that the server is running and reachable",
        ) from None


@contextlib.contextmanager
def connection(
    url: str | PgURL,
    *,
    connect_timeout: float = 30,
    statement_timeout: float | None = None,
    autocommit: bool = True,
) -> Iterator[psycopg2.extensions.connection]:
    """`with connection(url) as conn:` — always closed, errors scrubbed of secrets."""
    pg = parse_url(url)
    conn = connect(
        pg,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
        autocommit=autocommit,
    )
    try:
        yield conn
    except psycopg2.Error as exc:
        raise sql_error(pg, exc) from None
    finally:
        conn.close()


def sql_error(url: PgURL, exc: psycopg2.Error) -> DatabaseError:
    """A failed statement as our error: cancelled-by-timeout and disk-full named plainly."""
    text = url.scrub(str(exc).strip())
    first = text.splitlines()[0] if text else type(exc).__name__
    code = getattr(exc, "pgcode", None)
    if code == "57014":
        return DatabaseError(
            f"statement on {url.redacted()} exceeded command_timeout: {first}",
            hint="raise --command-timeout",
        )
    if code == "55P03":
        return DatabaseError(
            f"a statement on {url.redacted()} waited longer than command_timeout for a lock "
            f"that another session holds: {first}",
            hint="end that session's open transaction (pg_stat_activity shows it), or raise "
            "--command-timeout",
        )
    if code in ("53100",):
        return DatabaseError(f"{url.redacted()}: the server is out of disk space: {first}")
    return DatabaseError(f"query on {url.redacted()} failed: {first}")


def wait_interruptible(conn: Any) -> None:
    """A psycopg2 wait callback under which Ctrl-C (or a signal turned into it) stops a query
    that waits on the server: the query is cancelled and KeyboardInterrupt raised once the
    server has let go (psycopg2's own `wait_select` turns it into a QueryCanceledError,
    which would read as a database failure). Connecting still obeys `connect_timeout`,
    which libpq leaves to the caller in this mode."""
    interrupted = False
    deadline = None
    connecting = conn.status == psycopg2.extensions.STATUS_SETUP  # then "connecting" (20)
    if connecting:
        seconds = float(conn.info.dsn_parameters.get("connect_timeout") or 0)
        deadline = time.monotonic() + seconds if seconds > 0 else None
    while True:
        try:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                break
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if state == psycopg2.extensions.POLL_READ:
                ready = select.select([conn.fileno()], [], [], timeout)[0]
            elif state == psycopg2.extensions.POLL_WRITE:
                ready = select.select([], [conn.fileno()], [], timeout)[1]
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state}")
            if not ready and deadline is not None and time.monotonic() >= deadline:
                raise psycopg2.OperationalError("timeout expired")
        except KeyboardInterrupt:
            if connecting:
                # still connecting: nothing runs to cancel, and a server left waiting for the
                # rest of the handshake keeps that backend (and a DROP DATABASE behind it)
                # until its authentication_timeout: close the session now
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            interrupted = True
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()
        except psycopg2.Error:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    if interrupted:
        raise KeyboardInterrupt


class QueryCancel(threading.Event):
    """An event whose `set()` also cancels the running query of every connection watched
    with it: work in other threads stops at once, not when a query waiting on a lock (a
    frozen app's session, a user's LOCK TABLE) reaches its timeout. Ctrl-C during a backup
    would otherwise wait that long for the fingerprint beside it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._watched: set[Any] = set()

    def set(self) -> None:
        super().set()
        with self._lock:
            watched = list(self._watched)
        for conn in watched:
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()

    @contextlib.contextmanager
    def watching(self, conn: Any) -> Iterator[None]:
        """Within: `set()` cancels `conn`'s query (at once if it is already set)."""
        with self._lock:
            self._watched.add(conn)
        try:
            if self.is_set():
                with contextlib.suppress(psycopg2.Error):
                    conn.cancel()
            yield
        finally:
            with self._lock:
                self._watched.discard(conn)

    @contextlib.contextmanager
    def on_failure(self) -> Iterator[None]:
        """Set when the block raises anything (an error, Ctrl-C, a signal turned into it)."""
        try:
            yield
        except BaseException:
            self.set()
            raise
