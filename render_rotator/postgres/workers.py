"""What each copy task runs, and the state a copy's worker threads share.

The data streams (`COPY ... TO STDOUT` in the snapshot into `COPY ... FROM STDIN`, binary
whenever the types allow it), batches of small tables through one session pair, large
objects in slices, index and key builds (`pg_restore -L` of those TOC entries), ANALYZE and
sequences; with the progress counters and the reports sent to the caller's callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg2.extensions
from psycopg2 import sql

from render_rotator.errors import CopyError
from render_rotator.postgres import planning
from render_rotator.postgres.archive import TocEntry
from render_rotator.postgres.binaries import PgBin
from render_rotator.postgres.catalog import SourceTable, quote_literal
from render_rotator.postgres.connect import connection
from render_rotator.postgres.planning import Chunk
from render_rotator.postgres.progress import CopyProgressReport, ProgressCallback
from render_rotator.postgres.runner import describe_exit, last_error_line, read_stderr, spawn
from render_rotator.postgres.streams import (
    Deadline,
    Stopped,
    StreamOutcome,
    ToolProcesses,
    stream,
)
from render_rotator.postgres.tuning import tool_dsn, with_application_name, with_settings
from render_rotator.postgres.url import PgURL

log = logging.getLogger("render_rotator.postgres")

APPLICATION_NAME = "render-rotator-copy"
PROGRESS_INTERVAL = 0.5

# Settings every data session gets: text-format COPY must parse what it printed, and an
# RLS-filtered COPY must fail rather than silently copy a subset.
_STREAM_SETTINGS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "standard_conforming_strings": "on",
    # as pg_dump and pg_restore do: a database's own search_path (ALTER DATABASE ... SET)
    # would print reg* values unqualified on one side and resolve them elsewhere on the other
    "search_path": "pg_catalog",
}


_SETTING_UNITS = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1 << 20, "GB": 1 << 30}


def _setting_bytes(setting: str, unit: str) -> int | None:
    """A memory setting from pg_settings (`setting` counted in `unit`), in bytes."""
    if not setting.isdigit() or unit not in _SETTING_UNITS:
        return None
    return int(setting) * _SETTING_UNITS[unit]


class CopyWorkers:
    """One run of copy_database: the shared state its worker threads use, and what each
    kind of task runs (implements `taskgraph.CopyWork`)."""

    def __init__(
        self,
        source: PgURL,
        target: PgURL,
        *,
        client: PgBin,
        jobs: int,
        connect_timeout: float,
        command_timeout: float,
        maintenance_work_mem: str | None,
        split_bytes: int | None,
        progress: ProgressCallback | None,
        workdir: Path,
    ) -> None:
        self.source = with_application_name(source, APPLICATION_NAME)
        self.target = with_application_name(target, APPLICATION_NAME)
        self.client = client
        self.pg_bin: str | Path | None = None
        self.needs_tls = False
        self.jobs = jobs
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.maintenance_work_mem = maintenance_work_mem
        self.split_bytes = split_bytes
        self.progress_cb = progress
        self.workdir = workdir
        self.started = time.monotonic()
        self.deadline = Deadline(command_timeout)
        self.schema_path: Path | None = None  # the schema archive, once dumped
        self.procs = ToolProcesses()
        self.snapshot = ""
        self.imported_snapshot: str | None = None  # the caller's exported snapshot, if any
        self.source_session: psycopg2.extensions.connection | None = None  # holds the snapshot
        # called with each table once it is loaded and no exclusive build (ADD PRIMARY KEY)
        # waits for it: the verification sums it then (its read's lock would hold one off)
        self.on_rows_final: Callable[[SourceTable], None] | None = None
        self.encoding = "UTF8"
        self.superuser = False
        self.touched = False  # set once the target may hold part of the copy
        self._lock = threading.Lock()
        self.phase = "schema"
        self.bytes_done = 0
        self.bytes_total = 0
        self.rows_done = 0
        self.tables_done = 0
        self.tables_total = 0
        self._table_parts_left: dict[int, int] = {}
        self._last_report: dict[str, float] = {}
        self._server_build_memory: int | None = None  # the target's maintenance_work_mem
        self._build_memory_known = False

    # -- progress ---------------------------------------------------------------------------

    def report(self, event: str = "phase", table: str | None = None) -> None:
        """Tell the progress callback; streaming reports at most every PROGRESS_INTERVAL."""
        if self.progress_cb is None:
            return
        now = time.monotonic()
        with self._lock:
            if event == "bytes":
                # The first report of each table goes out, then one per interval.
                last = self._last_report.get(table or "", 0.0)
                if last and now - last < PROGRESS_INTERVAL:
                    return
                self._last_report[table or ""] = now
            progress = CopyProgressReport(
                phase=self.phase,
                event=event,
                table=table,
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                rows_done=self.rows_done,
                tables_done=self.tables_done,
                tables_total=self.tables_total,
            )
        try:
            self.progress_cb(progress)
        except Exception:  # a broken progress display must not break a copy
            log.warning("the progress callback failed; progress reports stop", exc_info=True)
            self.progress_cb = None

    def _add_bytes(self, table: str) -> Callable[[int], None]:
        def add(n: int) -> None:
            with self._lock:
                self.bytes_done += n
            self.report("bytes", table)

        return add

    def expect_parts(self, table: SourceTable, parts: int) -> None:
        """`table` travels in `parts` ctid ranges: loaded once all of them are."""
        self._table_parts_left[table.oid] = parts

    def table_loaded(self, table: SourceTable, rows: int) -> bool:
        """Count a finished chunk; True when it was the table's last one."""
        with self._lock:
            self.rows_done += rows
            left = self._table_parts_left.get(table.oid, 1) - 1
            self._table_parts_left[table.oid] = left
            if left <= 0:
                self.tables_done += 1
        self.report("table", table.label)
        return left <= 0

    def rows_final(self, tables: Sequence[SourceTable]) -> None:
        """Tables loaded, and no build that locks them exclusively waits for them."""
        if self.on_rows_final is not None:
            for table in tables:
                self.on_rows_final(table)

    # -- URLs for the tools -----------------------------------------------------------------

    def source_stream_url(self) -> PgURL:
        settings: dict[str, str | int] = dict(_STREAM_SETTINGS)
        settings.update(
            client_encoding=self.encoding,
            row_security="off",
            statement_timeout=self.deadline.ms(),
            idle_in_transaction_session_timeout=0,
        )
        return with_settings(self.source, settings)

    def target_stream_url(self) -> PgURL:
        settings: dict[str, str | int] = dict(_STREAM_SETTINGS)
        settings.update(
            client_encoding=self.encoding,
            synchronous_commit="off",
            statement_timeout=self.deadline.ms(),
        )
        return with_settings(self.target, settings)

    def target_ddl_url(self, parallel: int = 0, memory: int | None = None) -> PgURL:
        """Sessions that build indexes and validate keys. The copy already runs `jobs` of
        them side by side, so their own parallel workers would mostly oversubscribe the
        server (measured: about 7% slower overall); only the long pole of the copy, the
        largest index build, gets `parallel` workers (see `taskgraph.grant_parallel`).
        `memory` (bytes) sizes the build's `maintenance_work_mem` (`planning.build_memory`);
        the caller's own `maintenance_work_mem`, when given, wins."""
        settings: dict[str, str | int] = {
            "synchronous_commit": "off",
            "statement_timeout": self.deadline.ms(),
            "max_parallel_maintenance_workers": parallel,
            "max_parallel_workers_per_gather": 0,
        }
        if self.maintenance_work_mem:
            settings["maintenance_work_mem"] = self.maintenance_work_mem
        elif memory is not None:
            settings["maintenance_work_mem"] = f"{max(1024, memory // 1024)}kB"
        return with_settings(self.target, settings)

    def server_build_memory(self) -> int | None:
        """The target's own `maintenance_work_mem` in bytes (asked once): no build is given
        more. None when the server does not say."""
        with self._lock:
            if self._build_memory_known:
                return self._server_build_memory
        with self.target_cursor() as cur:
            cur.execute(
                "SELECT setting, unit FROM pg_catalog.pg_settings"
                " WHERE name = 'maintenance_work_mem'"
            )
            row = cur.fetchone()
        value = _setting_bytes(str(row[0]), str(row[1] or "")) if row else None
        with self._lock:
            self._server_build_memory, self._build_memory_known = value, True
        return value

    @contextlib.contextmanager
    def target_cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on the target for the copy's own SQL, bounded by what is left of the
        copy's deadline."""
        with (
            connection(
                self.target,
                connect_timeout=self.connect_timeout,
                statement_timeout=self.deadline.remaining(),
            ) as conn,
            conn.cursor() as cur,
        ):
            yield cur

    def psql(self, url: PgURL, *extra: str) -> list[str]:
        return [
            self.client.tool("psql"),
            "--no-psqlrc",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={tool_dsn(url)}",
            *extra,
        ]

    def snapshot_prelude(self) -> list[str]:
        return [
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            f"SET TRANSACTION SNAPSHOT '{self.snapshot}'",
        ]

    # -- streaming ----------------------------------------------------------------------------

    def stream(
        self, what: str, source_argv: list[str], target_argv: list[str], *, count_bytes_for: str
    ) -> StreamOutcome:
        """Source tool into target tool through a pipe pair; raises CopyError on failure."""
        return stream(
            what,
            source_argv,
            target_argv,
            source=self.source,
            target=self.target,
            procs=self.procs,
            deadline=self.deadline,
            connect_timeout=self.connect_timeout,
            on_bytes=self._add_bytes(count_bytes_for),
        )

    def copy_chunk(self, chunk: Chunk) -> int:
        """One table, or one ctid range of it: binary COPY when the types allow it."""
        table = chunk.table
        fmt = " (FORMAT binary)" if table.binary else ""
        if chunk.parts == 1:
            source_sql = f"COPY {table.ident}{table.column_spec} TO STDOUT{fmt}"
        else:
            where = []
            if chunk.low_block is not None:
                where.append(f"ctid >= '({chunk.low_block},0)'::tid")
            if chunk.high_block is not None:
                where.append(f"ctid < '({chunk.high_block},0)'::tid")
            source_sql = (
                f"COPY (SELECT {table.column_list} FROM ONLY {table.ident} "
                f"WHERE {' AND '.join(where)}) TO STDOUT{fmt}"
            )
        source_argv = self.psql(self.source_stream_url(), "--quiet")
        for command in [*self.snapshot_prelude(), source_sql]:
            source_argv += ["-c", command]
        if chunk.parts == 1:
            # Whole table in one transaction that also empties it: rows arrive frozen and
            # all-visible, and a repeated load of the table cannot duplicate rows.
            options = "(FORMAT binary, FREEZE)" if table.binary else "(FREEZE)"
            target_cmds = [
                "BEGIN",
                f"TRUNCATE ONLY {table.ident}",
                f"COPY {table.ident}{table.column_spec} FROM STDIN {options}",
                "COMMIT",
            ]
        else:
            target_cmds = [f"COPY {table.ident}{table.column_spec} FROM STDIN{fmt}"]
        target_argv = self.psql(self.target_stream_url())
        for command in target_cmds:
            target_argv += ["-c", command]
        outcome = self.stream(
            f"table {chunk.label}", source_argv, target_argv, count_bytes_for=table.label
        )
        return sum(outcome.rows)

    def copy_batch(self, tables: list[SourceTable]) -> list[int]:
        """Many small tables through one session pair and one target transaction.

        The source prints a psql script (`COPY ... FROM STDIN;` + inline text rows + `\\.`
        per table) that the target psql runs as it arrives. Small tables skip the
        TRUNCATE + FREEZE of big ones: per table it would cost more than the load itself.
        """
        lines = [f"{c};" for c in self.snapshot_prelude()]
        lines.append("SELECT 'BEGIN;';")
        for table in tables:
            stmt = f"COPY {table.ident}{table.column_spec} FROM STDIN;"
            lines.append(f"SELECT {quote_literal(stmt)};")
            lines.append(f"COPY {table.ident}{table.column_spec} TO STDOUT;")
            lines.append("SELECT '\\.';")
        lines.append("SELECT 'COMMIT;';")
        fd, name = tempfile.mkstemp(prefix="batch-", suffix=".sql", dir=self.workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        try:
            source_argv = self.psql(
                self.source_stream_url(), "--quiet", "--no-align", "--tuples-only", f"--file={name}"
            )
            target_argv = self.psql(self.target_stream_url())
            what = (
                f"table {tables[0].label}"
                if len(tables) == 1
                else f"{len(tables)} small tables ({tables[0].label}, ...)"
            )
            outcome = self.stream(what, source_argv, target_argv, count_bytes_for=tables[0].label)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if len(outcome.rows) != len(tables):
            raise CopyError(
                f"copying {len(tables)} small tables: expected {len(tables)} COPY results, "
                f"got {len(outcome.rows)}"
            )
        return outcome.rows

    def copy_large_objects(self, part: int = 0, parts: int = 1) -> int:
        """Large objects, with their OIDs and contents, read in the snapshot.

        Binary COPY of `lo_get()` slices for the objects whose OID falls in `part` of
        `parts`, into a temporary table on the target, then `lo_create()` + `lo_put()`
        recreate each under its own OID: no hex text, and `parts` streams side by side
        (pg_dump writes large objects as one serial script). The target holds a part's
        bytes twice until its transaction commits. Returns the number of slices.
        """
        slice_bytes = planning.LO_SLICE
        # each object in slices of at most LO_SLICE bytes (one bytea must stay below 1 GB);
        # its size comes from a read-only descriptor, opened and closed in the snapshot
        source_sql = f"""COPY (
            WITH sized AS (
                SELECT m.oid, (
                    SELECT CASE WHEN pg_catalog.lo_close(d.fd) = 0 THEN d.size END
                    FROM (SELECT o.fd, pg_catalog.lo_lseek64(o.fd, 0, 2) AS size
                          FROM (SELECT pg_catalog.lo_open(m.oid, 262144) AS fd OFFSET 0) o
                          OFFSET 0) d
                ) AS size
                FROM pg_catalog.pg_largeobject_metadata m
                WHERE m.oid::bigint % {parts} = {part}
            )
            SELECT s.oid, g.off, pg_catalog.lo_get(s.oid, g.off, {slice_bytes})
            FROM sized s,
                 LATERAL generate_series(0::bigint, greatest(s.size - 1, 0), {slice_bytes}) g(off)
        ) TO STDOUT (FORMAT binary)"""
        source_argv = self.psql(self.source_stream_url(), "--quiet")
        for command in [*self.snapshot_prelude(), source_sql]:
            source_argv += ["-c", command]
        target_argv = self.psql(self.target_stream_url())
        for command in (
            "BEGIN",
            "CREATE TEMPORARY TABLE render_rotator_lo (loid oid, off bigint, data bytea)"
            " ON COMMIT DROP",
            "COPY render_rotator_lo FROM STDIN (FORMAT binary)",
            "SELECT count(pg_catalog.lo_create(loid))"
            " FROM (SELECT DISTINCT loid FROM render_rotator_lo) o",
            "SELECT count(pg_catalog.lo_put(loid, off, data)) FROM render_rotator_lo",
            "COMMIT",
        ):
            target_argv += ["-c", command]
        label = "large objects" if parts == 1 else f"large objects (part {part + 1}/{parts})"
        outcome = self.stream(label, source_argv, target_argv, count_bytes_for="large objects")
        return sum(outcome.rows)

    def copy_large_object_comments(self) -> None:
        """Comments on large objects, once every part has created its objects."""
        with (
            connection(self.source, connect_timeout=self.connect_timeout, autocommit=False) as src,
            src.cursor() as cur,
        ):
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
            cur.execute(
                "SELECT objoid, description FROM pg_catalog.pg_description"
                " WHERE classoid = 'pg_catalog.pg_largeobject'::regclass"
            )
            comments = cur.fetchall()
        if not comments:
            return
        with self.target_cursor() as cur:
            for oid, text in comments:
                cur.execute(f"COMMENT ON LARGE OBJECT {int(oid)} IS %s", (text,))

    def restore_entries(
        self,
        path: Path,
        lines: Sequence[str],
        what: str,
        *,
        jobs: int,
        parallel: int = 0,
        memory: int | None = None,
    ) -> None:
        """pg_restore exactly the TOC entries given (post-data section) into the target."""
        fd, name = tempfile.mkstemp(prefix="toc-", suffix=".list", dir=self.workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        url = self.target_ddl_url(parallel, memory)
        argv = [
            self.client.tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            "--section=post-data",
            f"--use-list={name}",
            f"--dbname={tool_dsn(url)}",
        ]
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        argv.append(str(path))
        try:
            with (
                spawn(argv, urls=[self.target], connect_timeout=self.connect_timeout) as (
                    proc,
                    err,
                ),
                self.procs.track(proc),
            ):
                code = self.procs.wait(self.deadline, proc)[0]
                if code != 0:
                    if self.procs.stopping.is_set():
                        raise Stopped()
                    text = read_stderr(err, [self.target.password or ""])
                    raise CopyError(
                        f"{what} failed: {describe_exit('pg_restore', code)}: "
                        f"{last_error_line(text)}"
                    )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def build(
        self, entries: Sequence[TocEntry], what: str, parallel: int = 0, cost: int = 0
    ) -> None:
        """Indexes, keys or foreign keys of loaded tables, in one pg_restore session, with
        `maintenance_work_mem` sized for the build's `cost` (see `planning.build_memory`)."""
        assert self.schema_path is not None, "the schema is restored before any build"
        memory = None
        if not self.maintenance_work_mem:
            memory = planning.build_memory(cost, 1 + parallel, self.server_build_memory())
        self.restore_entries(
            self.schema_path,
            [e.line for e in entries],
            what,
            jobs=1,
            parallel=parallel,
            memory=memory,
        )

    def analyze(self, tables: Sequence[SourceTable]) -> None:
        """Planner statistics for freshly loaded tables, while other work still runs."""
        with self.target_cursor() as cur:
            cur.execute(f"ANALYZE {', '.join(t.ident for t in tables)}")

    def set_sequences(self, values: Sequence[tuple[str, int, bool]]) -> None:
        """Each sequence's value as the snapshot saw it."""
        if not values:
            return
        with self.target_cursor() as cur:
            for start in range(0, len(values), 500):
                statements = [
                    sql.SQL("SELECT pg_catalog.setval({}::regclass, {}, {})").format(
                        sql.Literal(name), sql.Literal(value), sql.Literal(called)
                    )
                    for name, value, called in values[start : start + 500]
                ]
                cur.execute(sql.SQL("; ").join(statements))
