"""How far a copy has got, as the engine tells it and as the target's server shows it.

- `CopyProgressReport`: what `copy_database` sends its `progress` callback (phase, bytes
  streamed, tables done), from its worker threads.
- `CopyWatcher`: for copies that report nothing while they run (pg_restore), a side
  connection polls the target (the copied data's size on disk, `pg_stat_progress_copy`)
  and feeds a display (`ProgressSink`, e.g. `render_rotator.ui.CopyProgressDisplay`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from render_rotator.postgres.catalog import qualified
from render_rotator.postgres.connect import connect
from render_rotator.postgres.size import user_data_bytes
from render_rotator.secrets import scrub

log = logging.getLogger("render_rotator.postgres")


@dataclass(frozen=True)
class CopyProgressReport:
    """A progress report, sent from worker threads (keep the callback quick)."""

    phase: str  # "schema", "data", "post-data", "analyze", "verify", "done"
    event: str  # "phase": a phase began; "bytes": data is streaming; "table": a table is in
    table: str | None  # the table a data report is about
    bytes_done: int  # COPY stream bytes moved so far, whole copy
    bytes_total: int  # on-disk size of all tables: an estimate of the stream's size
    rows_done: int  # rows loaded by finished chunks
    tables_done: int
    tables_total: int


ProgressCallback = Callable[[CopyProgressReport], None]


class ProgressSink(Protocol):
    """The display a `CopyWatcher` feeds: running totals per table, and the size on disk."""

    def measure_bytes(self, size: int) -> None: ...

    def update(self, table: str, bytes_done: int, rows_done: int) -> None: ...

    def table_done(self, table: str) -> None: ...


_PROGRESS_SQL = """
SELECT n.nspname, c.relname, p.bytes_processed, p.tuples_processed
FROM pg_stat_progress_copy p
JOIN pg_class c ON c.oid = p.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.datname = current_database() AND p.command = 'COPY FROM'
"""


def running_copies(conn: Any) -> list[tuple[str, int]]:
    """(table, rows taken in so far) of each `COPY FROM` running in `conn`'s database
    (PostgreSQL 14+; a role sees its own sessions)."""
    with conn.cursor() as cur:
        cur.execute(_PROGRESS_SQL)
        rows = cur.fetchall()
    return [(qualified(schema, name), int(done or 0)) for schema, name, _bytes, done in rows]


class CopyWatcher:
    """Feeds a display (`ProgressSink`) from the target's ``pg_stat_progress_copy``.

    pg_restore and COPY report nothing to their caller while they run, but the server knows
    the bytes and rows each COPY has taken in; a side connection polls that view (PostgreSQL
    14+; the restoring role sees its own sessions) and reports per table, named like the
    inventory (``schema.table``). A table leaving the view is done. With `expected_rows`
    (the source inventory's counts), a copy that ends cleanly reports every table complete,
    including ones too quick to be seen. Any problem only disables the display: it never
    fails the copy.

        progress = ui.copy_progress(total_rows=inventory.total_rows)
        with progress, CopyWatcher(target_url, progress, expected_rows=inventory.tables):
            manager.restore_database(target_url, archive)
    """

    def __init__(
        self,
        url: str,
        progress: ProgressSink,
        *,
        interval: float = 0.5,
        connect_timeout: float = 10.0,
        expected_rows: Mapping[str, int] | None = None,
        track_rows: bool = True,
    ) -> None:
        self.url = url
        self.track_rows = track_rows
        self.expected_rows = dict(expected_rows or {})
        self.progress = progress
        self.interval = interval
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: set[str] = set()

    def __enter__(self) -> CopyWatcher:
        self._thread = threading.Thread(target=self._run, name="copy-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout + 5)
        if kind is None:
            for table, rows in self.expected_rows.items():
                self.progress.update(table, 0, rows)
                self.progress.table_done(table)
        for table in sorted(self._active):
            self.progress.table_done(table)
        self._active.clear()

    def _run(self) -> None:
        try:
            conn = connect(self.url, connect_timeout=self.connect_timeout, statement_timeout=5)
        except Exception as exc:  # the display is optional; the copy is not
            log.debug("copy progress unavailable: %s", scrub(str(exc)))
            return
        try:
            if conn.server_version < 140000 and self.track_rows:
                log.debug("copy progress by rows needs PostgreSQL 14+ on the target")
                self.track_rows = False
            while True:
                self.poll(conn)
                if self._stop.wait(self.interval):
                    break
        except Exception as exc:
            log.debug("copy progress stopped: %s", scrub(str(exc)))
        finally:
            conn.close()

    def poll(self, conn: Any) -> None:
        """One look: the copied data's size on disk; with `track_rows`, also the view's
        running COPYs (rows per table), finishing the ones that ended."""
        self.progress.measure_bytes(user_data_bytes(conn))
        if not self.track_rows:
            return
        seen = set()
        for table, rows_done in running_copies(conn):
            seen.add(table)
            self.progress.update(table, 0, rows_done)
        for table in sorted(self._active - seen):
            self.progress.table_done(table)
        self._active = seen
