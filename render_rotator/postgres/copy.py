"""The fast copy: one snapshot, schema first, data streamed by parallel workers, then indexes.

`copy_database(source_url, target_url, jobs=N)` copies a live database into another one
while both exist, without an intermediate file:

1. A REPEATABLE READ session on the source exports its snapshot and holds ACCESS SHARE
   locks on every table until the end, so every worker sees the very same data.
2. The schema (`pg_dump --section=pre-data --section=post-data`, a small custom archive
   taken in that snapshot) is restored up to the data (`--section=pre-data`, one
   transaction, `--no-owner --no-privileges`, superuser-only harmless entries skipped).
3. Table data flows source -> target through `psql` pairs: `COPY ... TO STDOUT` in the
   snapshot on one side, `COPY ... FROM STDIN` on the other, joined by OS pipes that this
   process only splices (no row ever becomes a Python object; memory stays constant).
   Largest tables first, binary format whenever every column type allows it, and each
   whole table in one `TRUNCATE` + `COPY FREEZE` transaction (rows arrive frozen and
   all-visible: no hint-bit rewrite during index builds, no freeze vacuum later). A table
   larger than its fair share of the work is split into ctid block ranges (TID range scans,
   PostgreSQL 14+) so that one table cannot serialize the copy. Small tables travel up to
   50 to a session pair and one transaction, as a psql script of inline COPY blocks, so
   hundreds of them cost a handful of connections.
4. A dependency-driven scheduler keeps the `jobs` workers busy: as soon as a table is
   loaded its indexes and primary/unique keys are built (`pg_restore -L` of those TOC
   entries; GIN builds, the longest, start first), then it is ANALYZEd, and once both ends
   of a foreign key are ready the key is validated, all while other tables still stream.
5. The remaining post-data (triggers, materialized view data, partitioned parents'
   indexes, ...) is restored with `pg_restore -j N`, sequences are set from the snapshot,
   large objects are copied by `pg_dump --data-only --blobs` in the snapshot, and the
   parents and materialized views are ANALYZEd.

Timeouts: `command_timeout` is a wall-clock limit on the whole copy (and so on every child
process), `connect_timeout` applies to every connection, every SQL session runs with a
`statement_timeout`. Passwords reach the tools through a 0600 passfile only. The first
failing worker stops the others (their process groups are killed) and raises `CopyError`
naming the table and the cause; the target then holds a partial copy, which the next run
refuses to overwrite unless `clean=True`, which drops every user object first.

This module is the orchestration; each job has its module: `catalog` (what the source
holds), `clean` (emptying the target), `planning` (chunks, batches, load order),
`archive` (the schema archive and its table of contents), `streams` (processes and
pipes), `workers` (what each task runs), `taskgraph` (which task follows which),
`scheduler` (running them on `jobs` threads), `progress` (what the caller is told).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from render_rotator.errors import (
    CommandTimeoutError,
    CopyError,
    DatabaseError,
    ToolError,
    UsageError,
    VerificationError,
)
from render_rotator.postgres import archive
from render_rotator.postgres.binaries import (
    rejection,
    resolve_client,
    server_major_from_num,
    url_needs_tls,
)
from render_rotator.postgres.catalog import (
    SourceTable,
    export_snapshot,
    import_snapshot,
    is_superuser,
    lock_tables,
    read_sequences,
    read_source,
)
from render_rotator.postgres.clean import clean_target, target_objects
from render_rotator.postgres.connect import QueryCancel, connect, connection, sql_error
from render_rotator.postgres.fingerprint import (
    Fingerprint,
    TableSummer,
    apply_settings,
    changed_tables,
    database_settings,
    key_ranges,
    take_fingerprint,
    whole_tables,
    with_ranged_sums,
)
from render_rotator.postgres.inventory import VerificationReport, compare
from render_rotator.postgres.passfiles import private_dir
from render_rotator.postgres.planning import (
    SMALL_TABLE_BYTES,
    early_foreign_keys,
    early_index_entries,
    load_order,
    plan_chunks,
)
from render_rotator.postgres.progress import ProgressCallback
from render_rotator.postgres.runner import run_tool
from render_rotator.postgres.scheduler import Scheduler, TaskTiming, critical_path
from render_rotator.postgres.streams import Stopped
from render_rotator.postgres.taskgraph import CopyTasks, grant_parallel
from render_rotator.postgres.tuning import analyze_parallel, tool_dsn
from render_rotator.postgres.url import PgURL, parse_url
from render_rotator.postgres.workers import CopyWorkers

log = logging.getLogger("render_rotator.postgres")


@dataclass
class CopyResult:
    """What a copy moved and where the time went."""

    tables: int
    rows: int
    bytes: int
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    chunks: int = 0  # COPY streams run: one per table, one per ctid range of a split table
    sequences: int = 0
    large_objects: int = 0
    early_indexes: int = 0
    skipped: list[str] = field(default_factory=list)
    verification: VerificationReport | None = None
    timeline: list[TaskTiming] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds else 0.0
        return (
            f"copied {self.tables} tables, {self.rows} rows, {self.bytes / 1e6:.1f} MB "
            f"in {self.seconds:.1f}s ({rate:.1f} MB/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": self.tables,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds.items()},
            "chunks": self.chunks,
            "sequences": self.sequences,
            "large_objects": self.large_objects,
            "early_indexes": self.early_indexes,
            "skipped": self.skipped,
            "verification": self.verification.to_dict() if self.verification else None,
            "critical_path": [t.to_dict() for t in critical_path(self.timeline)],
        }


def _same_database(a: PgURL, b: PgURL) -> bool:
    return (a.host, a.port, a.dbname) == (b.host, b.port, b.dbname)


def copy_database(
    source_url: str | PgURL,
    target_url: str | PgURL,
    *,
    jobs: int = 2,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    pg_bin: str | Path | None = None,
    verify: bool = False,
    verify_mode: str = "content",
    clean: bool = False,
    progress: ProgressCallback | None = None,
    maintenance_work_mem: str | None = None,
    split_bytes: int | None = None,
    snapshot: str | None = None,
    stop: threading.Event | None = None,
) -> CopyResult:
    """Copy every schema object and row of `source_url` into the empty `target_url`.

    `jobs` workers share the data streams and index builds. The target must be empty
    unless `clean=True`, which first drops every user object in it (the way to re-run after
    a failed copy). The source database's settings (`ALTER DATABASE ... SET`) are set on
    the target. `verify=True` compares the target with the snapshot that was copied, by
    content (`verify_mode="content"`: per-table checksums, sequences, definitions,
    settings, large objects; "counts": row counts instead of checksums) and raises
    VerificationError on any difference.
    `maintenance_work_mem` is set per session for index builds on the target (None keeps
    the server's); `split_bytes` forces tables larger than it into ctid ranges of about
    that size (default: only tables larger than their fair share are split).
    `snapshot`: an exported snapshot of the source to copy instead of a new one (say, the
    one a backup taken beside the copy reads: both then hold the very same data); its
    exporter must stay open until the copy has imported it, which it does first.
    `stop`: set it from another thread to end the copy early (CopyError, partial copy).
    Raises CopyError (with the table and cause) when a worker fails, CommandTimeoutError
    when `command_timeout` runs out; in both cases the target holds a partial copy.
    """
    if jobs < 1:
        raise UsageError("jobs must be at least 1")
    if connect_timeout <= 0 or command_timeout <= 0:
        raise UsageError("timeouts must be positive numbers of seconds")
    source = parse_url(source_url)
    target = parse_url(target_url)
    if _same_database(source, target):
        raise UsageError(
            f"source and target are the same database ({source.redacted()})",
            hint="copy into another, empty database",
        )
    needs_tls = any(url_needs_tls(u.host, u.sslmode) for u in (source, target))
    client = resolve_client(pg_bin, needs_tls=needs_tls)
    # inside this process's private directory: a copy killed with SIGKILL cannot remove its
    # own, and the next run sweeps a dead process's directory whole
    with tempfile.TemporaryDirectory(prefix="copy-", dir=private_dir()) as tmp:
        copier = CopyWorkers(
            source,
            target,
            client=client,
            jobs=jobs,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            maintenance_work_mem=maintenance_work_mem,
            split_bytes=split_bytes,
            progress=progress,
            workdir=Path(tmp),
        )
        copier.pg_bin = pg_bin
        copier.needs_tls = needs_tls
        copier.imported_snapshot = snapshot
        try:
            with _stopped_by(stop, copier):
                return _run(copier, verify=verify_mode if verify else None, clean=clean)
        except DatabaseError as exc:
            if not copier.touched:
                raise
            if isinstance(exc, ToolError) and not isinstance(exc, CommandTimeoutError):
                exc = CopyError(exc.message, hint=exc.hint)
            exc.message += (
                f"; the target {target.redacted()} now holds a partial copy: run the copy "
                "again with clean=True (--clean) to drop it and start over"
            )
            raise exc from None
        finally:
            copier.procs.stop_all()


_STOP_POLL = 0.1  # seconds between looks at the caller's `stop`


@contextlib.contextmanager
def _stopped_by(stop: threading.Event | None, c: CopyWorkers) -> Iterator[None]:
    """While the copy runs: once `stop` is set, its processes are killed, the query of its
    snapshot session is cancelled and nothing new starts (every step after that fails as
    stopped), so the copy raises CopyError; a copy that got to its end all the same returns
    as usual."""
    if stop is None:
        yield
        return
    over = threading.Event()

    def watch() -> None:
        while not over.wait(_STOP_POLL):
            if stop.is_set():
                c.procs.stop_all()
                session = c.source_session
                if session is not None:  # again each time: a query started since is ended too
                    with contextlib.suppress(psycopg2.Error):
                        session.cancel()

    watcher = threading.Thread(target=watch, name="copy-stop", daemon=True)
    watcher.start()
    try:
        yield
    except (DatabaseError, Stopped) as exc:
        if not stop.is_set():
            raise
        raise CopyError(f"the copy was stopped before it finished ({exc})") from None
    finally:
        over.set()
        watcher.join()


def _run(c: CopyWorkers, *, verify: str | None, clean: bool) -> CopyResult:
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + (now - mark)
        mark = now

    # -- the target: reachable, empty (or cleaned) -----------------------------------------
    with connection(
        c.target, connect_timeout=c.connect_timeout, statement_timeout=c.deadline.remaining()
    ) as tconn:
        target_num, c.superuser = int(tconn.server_version), is_superuser(tconn)
        leftovers = target_objects(tconn)
        if leftovers and not clean:
            shown = ", ".join(leftovers[:5]) + (" ..." if len(leftovers) > 5 else "")
            raise CopyError(
                f"the target {c.target.redacted()} is not empty ({len(leftovers)} objects: "
                f"{shown})",
                hint="copy into an empty database, or pass clean=True (--clean) to drop "
                "every object in it first",
            )
        if leftovers:
            c.touched = True
            dropped = clean_target(tconn)
            log.warning("cleaned the target: dropped %d objects left by an earlier run", dropped)
            rest = target_objects(tconn)
            if rest:
                raise CopyError(
                    f"could not clean the target {c.target.redacted()}: {', '.join(rest[:5])} "
                    "remain",
                    hint="drop them by hand (they may belong to another role)",
                )
    phase("prepare")

    # -- the snapshot everyone shares ------------------------------------------------------------
    exporter = connect(
        c.source,
        connect_timeout=c.connect_timeout,
        statement_timeout=c.deadline.remaining(),
        autocommit=False,
    )
    c.source_session = exporter  # a stop cancels its query (a lock wait, say)
    try:
        return _copy_in_snapshot(c, exporter, target_num, phases, phase, verify)
    except psycopg2.Error as exc:
        raise sql_error(c.source, exc) from None
    finally:
        with contextlib.suppress(psycopg2.Error):
            exporter.rollback()
        exporter.close()


def _copy_in_snapshot(
    c: CopyWorkers,
    exporter: psycopg2.extensions.connection,
    target_num: int,
    phases: dict[str, float],
    phase: Callable[[str], None],
    verify: str | None,
) -> CopyResult:
    exporter.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with exporter.cursor() as cur:
        if c.imported_snapshot:
            import_snapshot(cur, c.imported_snapshot)  # then exported again, for the workers
        cur.execute("SET idle_in_transaction_session_timeout = 0")
        c.snapshot = export_snapshot(cur)
    source_major = server_major_from_num(int(exporter.server_version))
    if rejection(c.client, server_major=source_major, needs_tls=c.needs_tls) is not None:
        c.client = resolve_client(c.pg_bin, server_major=source_major, needs_tls=c.needs_tls)
    if server_major_from_num(target_num) < source_major:
        log.warning(
            "copying from PostgreSQL %d to an older server (%d): the schema may not restore",
            source_major,
            server_major_from_num(target_num),
        )
    plan = read_source(exporter)
    plan.tables = load_order(plan.tables, plan.constraints)
    c.encoding = plan.encoding
    lock_tables(exporter, plan.tables, c.deadline.remaining())
    c.tables_total = len(plan.tables)
    c.bytes_total = sum(t.size for t in plan.tables)
    c.phase = "schema"
    c.report()

    # The source's side of the verification starts now, in the snapshot: its sums run
    # while the schema restores and the data streams, when the source is mostly idle.
    source_side = SourceFingerprint(c, verify) if verify else None
    try:
        schema_path = c.schema_path = c.workdir / "schema.dump"
        filtered_toc, skipped = _restore_schema(c, schema_path)
        phase("schema")

        if source_side is not None:
            c.on_rows_final = source_side.rows_final

        # -- data, with the big tables' indexes built as soon as each table is loaded -----
        c.phase = "data"
        chunks, batches = plan_chunks(
            plan.tables,
            jobs=c.jobs,
            split_bytes=c.split_bytes,
            ctid_ranges=plan.server_num >= 140000,
        )
        for chunk in chunks:
            c.expect_parts(chunk.table, chunk.parts)
        copied = {t.oid for t in plan.tables}
        early = early_index_entries(filtered_toc, plan, copied)
        foreign_keys = early_foreign_keys(filtered_toc, plan, copied)
        early_lines = {e.line for entries in early.values() for e in entries}
        early_lines |= {entry.line for entry, _fk in foreign_keys}
        graph = CopyTasks(c, plan, early, foreign_keys, jobs=c.jobs)
        scheduler = Scheduler(
            c.jobs,
            stop=c.procs.stop_all,
            deadline=c.deadline.at,
            timeout_error=lambda: c.deadline.error(stopped=True),
            echoes=(Stopped,),
            grant=grant_parallel,
            origin=c.started,
        )
        timeline = scheduler.run(graph.initial(chunks, batches), graph.after)
        phase("data")

        # -- sequences, then the rest of post-data with pg_restore -j -----------------------------
        values = read_sequences(exporter, plan.sequences)
        c.set_sequences(values)
        _copy_settings(c)
        phase("sequences")
        c.phase = "post-data"
        c.report()
        rest = [line if line not in early_lines else ";" + line for line in filtered_toc]
        c.restore_entries(
            schema_path,
            rest,
            f"restoring indexes and constraints into {c.target.redacted()}",
            jobs=c.jobs,
        )
        phase("post-data")

        c.phase = "analyze"
        c.report()
        # Tables were analyzed as soon as their indexes existed; what is left needs everything:
        # partitioned and inheritance parents, materialized views (refreshed in post-data).
        analyze_parallel(
            c.target,
            jobs=c.jobs,
            connect_timeout=c.connect_timeout,
            timeout=c.deadline.remaining(),
            only_parents_and_views=True,
        )
        phase("analyze")

        report: VerificationReport | None = None
        if source_side is not None:
            c.phase = "verify"
            c.report()
            report = _verify(c, source_side)
            phase("verify")
        c.phase = "done"
        c.report()
        result = CopyResult(
            tables=len(plan.tables),
            rows=c.rows_done,
            bytes=c.bytes_done,
            seconds=time.monotonic() - c.started,
            phase_seconds=phases,
            chunks=len(chunks) + sum(len(b) for b in batches),
            sequences=len(values),
            large_objects=plan.large_objects,
            early_indexes=len(early_lines),
            skipped=list(skipped),
            verification=report,
            timeline=timeline,
        )
        log.info("%s", result.summary())
        if report is not None and not report.equal:
            raise VerificationError(report.summary(), differences=report.differences)
        return result
    finally:
        if source_side is not None:
            source_side.stop()


def _restore_schema(c: CopyWorkers, schema_path: Path) -> tuple[list[str], list[str]]:
    """One archive of the schema (pre- and post-data, at `schema_path`) in the snapshot, its
    pre-data restored into the target now. Returns the archive's table of contents as
    restored, from which the post-data is built later, and the entries left out (they need a
    superuser)."""
    run_tool(
        [
            c.client.tool("pg_dump"),
            "--format=custom",
            f"--file={schema_path}",
            "--section=pre-data",
            "--section=post-data",
            f"--snapshot={c.snapshot}",
            f"--lock-wait-timeout={c.deadline.ms()}",
            "--no-password",
            f"--dbname={c.source.public_url()}",
        ],
        urls=[c.source],
        timeout=c.deadline.remaining(),
        what=f"pg_dump of the schema of {c.source.redacted()}",
        connect_timeout=c.connect_timeout,
    )
    toc = archive.list_archive(c.client, schema_path, timeout=c.deadline.remaining())
    with archive.restore_list(toc, superuser=c.superuser) as (list_file, skipped):
        filtered_toc = Path(list_file).read_text(encoding="utf-8").splitlines()
        # Large objects are created together with their contents by the data step.
        Path(list_file).write_text(
            "\n".join(";" + ln if archive.is_large_object_entry(ln) else ln for ln in filtered_toc)
            + "\n",
            encoding="utf-8",
        )
        run_tool(
            [
                c.client.tool("pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--no-password",
                "--single-transaction",
                "--section=pre-data",
                f"--use-list={list_file}",
                f"--dbname={tool_dsn(c.target_ddl_url())}",
                str(schema_path),
            ],
            urls=[c.target],
            timeout=c.deadline.remaining(),
            what=f"restoring the schema into {c.target.redacted()}",
            connect_timeout=c.connect_timeout,
        )
    for entry in skipped:
        log.info("skipped (needs a superuser, holds no data): %s", entry)
    c.touched = True
    return filtered_toc, list(skipped)


class SourceFingerprint:
    """The source side of the verification, summed in the copy's snapshot by one session
    while the copy runs (the source is mostly idle then), so that only the target's side is
    left once the data is in."""

    def __init__(self, c: CopyWorkers, mode: str) -> None:
        self.mode = mode
        # tables are summed whole; their key ranges only once a table differs (_verify)
        self.ranges = key_ranges(
            c.source, jobs=c.jobs, mode=mode, connect_timeout=c.connect_timeout
        )
        self.plan = whole_tables(self.ranges)
        self.cancel = QueryCancel()  # stop() also ends a query blocked on a lock
        self.result: Fingerprint | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(c,), name="source-fingerprint", daemon=True
        )
        self.thread.start()
        # the target's big tables, each summed once loaded (taskgraph: CopyWork.rows_final)
        self.target = TableSummer(
            c.target,
            self.plan,
            connect_timeout=c.connect_timeout,
            statement_timeout=c.deadline.remaining(),
        )

    def _run(self, c: CopyWorkers) -> None:
        try:
            self.result = take_fingerprint(
                c.source,
                snapshot=c.snapshot,
                jobs=1,
                mode=self.mode,
                like=self.plan,
                connect_timeout=c.connect_timeout,
                statement_timeout=c.deadline.remaining(),
                cancel=self.cancel,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc

    def rows_final(self, table: SourceTable) -> None:
        if table.size >= SMALL_TABLE_BYTES and not table.has_children:
            self.target.add(table.schema, table.name)

    def stop(self) -> None:
        self.cancel.set()
        self.target.stop()
        self.thread.join()

    def wait(self) -> Fingerprint:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _verify(c: CopyWorkers, source_side: SourceFingerprint) -> VerificationReport:
    """The target's fingerprint, compared with the source's taken in the copied snapshot."""
    started = time.monotonic()
    target = take_fingerprint(
        c.target,
        jobs=c.jobs,
        mode=source_side.mode,
        like=source_side.plan,
        connect_timeout=c.connect_timeout,
        statement_timeout=c.deadline.remaining(),
        known=source_side.target.finish(),
    )
    source = source_side.wait()
    report = compare(source, target, time.monotonic() - started)
    if not report.equal:
        report = _name_ranges(c, source_side.ranges, source, target, started)
    log.debug("%s", report.summary())  # the caller shows (or raises) the result
    return report


def _name_ranges(
    c: CopyWorkers, ranges: Fingerprint, source: Fingerprint, target: Fingerprint, started: float
) -> VerificationReport:
    """The comparison again, with the tables that differ summed by key range on both sides
    (the source still in the copy's snapshot), so that the report names the ranges. The
    first readings stand; a table the second finds equal keeps its whole sums
    (fingerprint.with_ranged_sums)."""
    ranged = {name for name, t in ranges.tables.items() if t.chunks}
    again = set(changed_tables(source, target)) & ranged
    if again:
        sides = []
        for url, snapshot, sums in ((c.source, c.snapshot, source), (c.target, None, target)):
            sides.append(
                take_fingerprint(
                    url,
                    snapshot=snapshot,
                    jobs=c.jobs,
                    mode=sums.mode,
                    like=ranges,
                    connect_timeout=c.connect_timeout,
                    statement_timeout=c.deadline.remaining(),
                    known={k: v for k, v in sums.tables.items() if k not in again},
                )
            )
        differ = set(changed_tables(*sides)) & again
        source = with_ranged_sums(source, sides[0], differ)
        target = with_ranged_sums(target, sides[1], differ)
    return compare(source, target, time.monotonic() - started)


def _copy_settings(c: CopyWorkers) -> None:
    """The source database's own settings (`ALTER DATABASE ... SET`), which a schema dump
    without --create leaves out, set on the target."""
    settings = database_settings(c.source, connect_timeout=c.connect_timeout)
    try:
        apply_settings(c.target, settings, connect_timeout=c.connect_timeout)
    except DatabaseError as exc:
        raise CopyError(
            f"could not carry the database settings over: {exc.message}",
            hint="the target's role must own the target database",
        ) from None


__all__ = ["CopyResult", "copy_database"]
