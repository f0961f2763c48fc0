"""What a person watching a rotation sees: live progress on a terminal, plain lines elsewhere.

The rotation and the copy call one API (`phase`, `waiting`, `copy_progress`, `final_report`)
without knowing where their output goes; `make_ui` picks the presentation:

- ``TerminalUI`` (stderr is a terminal): rich spinners with elapsed time for phases and for
  waits on Render, a per-table copy bar with bytes, rows and ETA, log lines printed above the
  live display, and a colored final report. Honours ``NO_COLOR``.
- ``ActionsUI`` (``GITHUB_ACTIONS=true``): plain lines, each phase a collapsible log group.
- ``PlainUI`` (piped, cron, files): timestamped log lines, progress at most every few seconds,
  never an escape code.

Progress always goes to stderr; stdout carries only the final report, and under ``--json``
nothing but the JSON object (printed by the caller), so `final_report` is silent then.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO, Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from render_rotator import github
from render_rotator.postgres.progress import CopyWatcher
from render_rotator.rotation.observer import CopyMeter, PhaseShown
from render_rotator.secrets import scrub

__all__ = [
    "ActionsUI",
    "PhaseShown",
    "CopyProgressDisplay",
    "PlainUI",
    "TerminalUI",
    "UI",
    "human_bytes",
    "make_ui",
    "report_lines",
]

log = logging.getLogger("render_rotator.ui")


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# --- the report as text ----------------------------------------------------------------------


def _reports(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if isinstance(report.get("databases"), list):
        return [r for r in report["databases"] if isinstance(r, Mapping)]
    return [report]


def _details(r: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the plain and the colored report."""
    rows: list[tuple[str, str]] = []
    old, new = r.get("old") or {}, r.get("new") or {}
    if old:
        # "old" only beside a new one; otherwise it is simply the database in use
        rows.append(
            (
                "old" if new else "database",
                f"{old.get('id')} ({old.get('name')}), expires {old.get('expires_at') or 'never'}",
            )
        )
    if new:
        version = f", PostgreSQL {new['version']}" if new.get("version") else ""
        rows.append(
            (
                "new",
                f"{new.get('id')} ({new.get('name')}){version}, "
                f"expires {new.get('expires_at') or 'never'}",
            )
        )
    if r.get("strategy"):
        rows.append(("strategy", f"{r['strategy']}, freeze {r.get('freeze')}"))
    if r.get("freeze_seconds") is not None:
        rows.append(("write freeze", _duration(float(r["freeze_seconds"]))))
    if r.get("rows_copied") is not None:
        size = f", {human_bytes(r['bytes_copied'])}" if r.get("bytes_copied") is not None else ""
        rows.append(("copied", f"{r['rows_copied']:,} rows{size}"))
    backup = r.get("backup")
    if isinstance(backup, Mapping) and backup.get("path"):
        rows.append(("backup", f"{backup['path']} (sha256 {backup.get('sha256')})"))
    for t in r.get("targets") or []:
        rows.append(("target", f"{t.get('target')}: {t.get('status')}"))
    for d in r.get("deploys") or []:
        label = "rollback" if d.get("rollback") else "deploy"
        rows.append((label, f"{d.get('service_id')} {d.get('deploy_id')}: {d.get('status')}"))
    return rows


def _headline(word: str, message: str) -> tuple[str, str]:
    """The outcome word and the rest of the message, without saying the word twice
    ("rotated" + "rotated to dpg-..." -> "rotated", " to dpg-...")."""
    if not message:
        return word, ""
    if message.startswith(word):
        return word, message[len(word) :]
    return word, f" - {message}"


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The final report as plain lines (no color, no box drawing), secrets scrubbed."""
    lines: list[str] = []
    for r in _reports(report):
        word, rest = _headline(github.outcome(r), str(r.get("message") or ""))
        lines.append(f"{r.get('database')}: {word}{rest}")
        for label, value in _details(r):
            lines.append(f"  {label + ':':<14}{value}")
        if r.get("plan"):
            lines.append("  plan:")
            lines += [f"    {i}. {step}" for i, step in enumerate(r["plan"], 1)]
        for p in r.get("phases") or []:
            seconds = p.get("seconds")
            shown = f"{seconds:8.1f}s" if isinstance(seconds, int | float) else "        ?"
            lines.append(f"  phase {p.get('name', '?'):<12} {p.get('status', '?'):<8}{shown}")
        lines += [f"  note: {n}" for n in r.get("notes") or []]
    return [scrub(line) for line in lines]


_STYLE = {
    "rotated": "bold green",
    "dry run": "bold yellow",
    "not due": "bold cyan",
    "no change": "bold",
    "failed": "bold red",
    "mismatch": "bold red",
}
_PHASE_STYLE = {"done": "green", "skipped": "dim", "failed": "bold red"}


def _rich_report(report: Mapping[str, Any]) -> list[Any]:
    """Renderables for a colored final report."""
    out: list[Any] = []
    for r in _reports(report):
        word = github.outcome(r)
        mark = "✗" if word in ("failed", "mismatch") else "✓"
        title = Text.assemble(
            (f"{mark} {scrub(str(r.get('database')))} ", _STYLE[word]), (word, _STYLE[word])
        )
        _, rest = _headline(word, str(r.get("message") or ""))
        if rest:
            title.append(scrub(rest), style="default")
        out.append(title)
        details = Table(box=None, show_header=False, padding=(0, 1), pad_edge=True)
        details.add_column(style="bold", no_wrap=True)
        details.add_column(overflow="fold")
        for label, value in _details(r):
            details.add_row(label, scrub(value))
        if details.row_count:
            out.append(details)
        if r.get("plan"):
            plan = Table(title="plan", box=box.SIMPLE, show_header=False, title_justify="left")
            plan.add_column(justify="right", style="dim")
            plan.add_column()
            for i, step in enumerate(r["plan"], 1):
                plan.add_row(str(i), scrub(str(step)))
            out.append(plan)
        phases = r.get("phases") or []
        if phases:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=True)
            table.add_column("phase")
            table.add_column("status")
            table.add_column("time", justify="right")
            for p in phases:
                status = str(p.get("status", "?"))
                seconds = p.get("seconds")
                table.add_row(
                    str(p.get("name", "?")),
                    Text(status, style=_PHASE_STYLE.get(status, "")),
                    _duration(seconds) if isinstance(seconds, int | float) else "?",
                )
            out.append(table)
        for note in r.get("notes") or []:
            out.append(Text(f"note: {scrub(str(note))}", style="yellow"))
    return out


# --- the UI ------------------------------------------------------------------------------


class CopyProgressDisplay:
    """Progress of one copy; `update` may be called from several worker threads.

    `update(table, bytes_done, rows_done)` takes the running totals for that table (not
    increments), so a retried or re-reported table never double counts.

    Bytes: once `measure_bytes` has been called, bytes are the copied data's size on disk
    in the target (`render_rotator.postgres.size`, the measure the report uses) and
    `total_bytes` is the source's size by the same measure, an estimate: the done count is
    never shown above it (the total grows to match), and the last line shows the measured
    size alone.
    """

    def __init__(self, total_bytes: int | None = None, total_rows: int | None = None) -> None:
        self.total_bytes = total_bytes
        self.total_rows = total_rows
        self.started = time.monotonic()
        self.measured_bytes: int | None = None
        self._tables: dict[str, tuple[int, int]] = {}
        self._table_totals: dict[str, tuple[int | None, int | None]] = {}
        self._done: set[str] = set()
        self._lock = threading.Lock()

    @property
    def bytes_done(self) -> int:
        with self._lock:
            if self.measured_bytes is not None:
                return self.measured_bytes
            return sum(b for b, _ in self._tables.values())

    @property
    def bytes_total(self) -> int | None:
        """The total to show: never below what is done."""
        if not self.total_bytes:
            return None
        return max(self.total_bytes, self.bytes_done)

    def measure_bytes(self, size: int) -> None:
        """The target's on-disk size of the copied data, now."""
        with self._lock:
            self.measured_bytes = int(size)
        self._changed_overall()

    def _changed_overall(self) -> None:
        """Hook for the display: the overall totals changed."""

    @property
    def rows_done(self) -> int:
        with self._lock:
            return sum(r for _, r in self._tables.values())

    def eta(self) -> float | None:
        """Seconds left at the rate so far, by bytes or else rows (None while unknown)."""
        if self.bytes_total:
            done, total = self.bytes_done, self.bytes_total
        elif self.total_rows:
            done, total = self.rows_done, self.total_rows
        else:
            return None
        elapsed = time.monotonic() - self.started
        if done <= 0 or elapsed <= 0:
            return None
        return max(0.0, (total - done) / (done / elapsed))

    def start_table(
        self, table: str, total_bytes: int | None = None, total_rows: int | None = None
    ) -> None:
        """Optional: announce a table, with its size when known (for a per-table bar)."""
        with self._lock:
            self._table_totals[table] = (total_bytes, total_rows)
            self._tables.setdefault(table, (0, 0))
        self._changed(table)

    def update(self, table: str, bytes_done: int, rows_done: int) -> None:
        with self._lock:
            self._tables[table] = (int(bytes_done), int(rows_done))
        self._changed(table)

    def table_done(self, table: str) -> None:
        with self._lock:
            self._done.add(table)
            self._tables.setdefault(table, (0, 0))
        self._changed(table)

    def close(self) -> None:
        """Finish: the display is removed and a one-line total is logged."""

    def _changed(self, table: str) -> None:
        """Hook for the display."""

    def __enter__(self) -> CopyProgressDisplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def summary(self, *, final: bool = False) -> str:
        """Running totals; `final`: the finished copy (bytes as measured, no estimate)."""
        done_bytes, done_rows = self.bytes_done, self.rows_done
        size = human_bytes(done_bytes)
        total = self.bytes_total
        if total and not final:
            size += f" of ~{human_bytes(total)} ({100 * done_bytes / total:.0f}%)"
        rows = f"{done_rows:,}"
        if self.total_rows:
            rows += f" of {self.total_rows:,}"
        with self._lock:
            tables = f"{len(self._done)}/{len(self._tables)} tables done"
        return f"{size}, {rows} rows, {tables}"


class UI:
    """The interface the rotation uses; also the quiet fallback that shows nothing live."""

    def __init__(
        self,
        *,
        as_json: bool = False,
        quiet: bool = False,
        verbose: int = 0,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self._stdout = stdout
        self._stderr = stderr

    @property
    def stdout(self) -> IO[str]:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> IO[str]:
        return self._stderr or sys.stderr

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseShown]:
        yield PhaseShown()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        yield

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyProgressDisplay:
        return CopyProgressDisplay(total_bytes, total_rows)

    def watch_copy(
        self,
        url: str,
        progress: CopyMeter,
        *,
        expected_rows: Mapping[str, int] | None = None,
        track_rows: bool = True,
        connect_timeout: float = 10.0,
    ) -> CopyWatcher:
        """The target's ``pg_stat_progress_copy`` and size, polled into `progress`."""
        return CopyWatcher(
            url,
            progress,
            expected_rows=expected_rows,
            track_rows=track_rows,
            connect_timeout=connect_timeout,
        )

    def final_report(self, report: Mapping[str, Any]) -> None:
        """Print the report on stdout: colored on a terminal, plain lines otherwise."""
        if self.as_json:
            return
        console = Console(file=self.stdout, highlight=False, soft_wrap=False)
        if console.is_terminal and not console.is_dumb_terminal:
            for renderable in _rich_report(report):
                console.print(renderable)
            return
        for line in report_lines(report):
            self.stdout.write(line + "\n")
        self.stdout.flush()

    def close(self) -> None:
        """Stop any live display and give logging its stream back."""

    def __enter__(self) -> UI:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _PlainCopy(CopyProgressDisplay):
    """A line at most every `interval` seconds, and one at the end."""

    def __init__(self, total_bytes: int | None, total_rows: int | None, interval: float) -> None:
        super().__init__(total_bytes, total_rows)
        self.interval = interval
        self._last = time.monotonic()
        self._closed = False

    def _changed(self, table: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            eta = self.eta()
            log.info(
                "copy: %s, table %s%s",
                self.summary(),
                table,
                f", ETA {_duration(eta)}" if eta is not None else "",
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self.started
        log.info("copy: %s in %s", self.summary(final=True), _duration(elapsed))


class PlainUI(UI):
    """Plain, timestamped log lines on stderr (via logging, so -q silences them)."""

    progress_interval = 10.0
    waiting_interval = 30.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseShown]:
        log.info("phase %s: started", name)
        started = time.monotonic()
        shown = PhaseShown()
        try:
            yield shown
        except BaseException:
            log.info("phase %s: failed after %s", name, _duration(time.monotonic() - started))
            raise
        if shown.gave_way:
            log.info("phase %s: paused: %s", name, shown.gave_way)
        elif shown.skipped:
            log.info("phase %s: skipped (nothing to do)", name)
        else:
            log.info("phase %s: done in %s", name, _duration(time.monotonic() - started))

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        log.info("waiting for %s", what)
        started = time.monotonic()
        stop = threading.Event()

        def remind() -> None:
            while not stop.wait(self.waiting_interval):
                log.info("still waiting for %s (%s)", what, _duration(time.monotonic() - started))

        reminder = threading.Thread(target=remind, name="ui-waiting", daemon=True)
        reminder.start()
        try:
            yield
        finally:
            stop.set()
            reminder.join()
        log.info("done waiting for %s after %s", what, _duration(time.monotonic() - started))

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyProgressDisplay:
        return _PlainCopy(total_bytes, total_rows, self.progress_interval)


class ActionsUI(PlainUI):
    """Plain lines in collapsible groups, one per phase (GitHub cannot nest groups)."""

    progress_interval = 15.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseShown]:
        with github.group(f"phase {name}"), super().phase(name) as shown:
            yield shown


# --- terminal --------------------------------------------------------------------------------


def _progress_fields(
    done_bytes: int, done_rows: int, total_bytes: int | None, total_rows: int | None
) -> dict[str, Any]:
    """A copy task's fields; its completed/total count bytes when known, else rows."""
    by_bytes = bool(total_bytes) or not total_rows
    if total_bytes:
        total_bytes = max(total_bytes, done_bytes)  # an estimate: never shown below done
    return {
        "completed": done_bytes if by_bytes else done_rows,
        "total": (total_bytes or None) if by_bytes else total_rows,
        "bytes": done_bytes,
        "rows": done_rows,
        "bytes_total": total_bytes,
        "rows_total": total_rows,
    }


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rows, total = task.fields.get("rows"), task.fields.get("rows_total")
        if rows is None:
            return Text("")
        return Text(f"{rows:,}{f' / {total:,}' if total else ''} rows", style="cyan")


class _BarColumn(BarColumn):
    """A bar only where the total is known; a table of unknown size just counts."""

    def render(self, task: Task) -> Any:
        if task.total is None:
            return Text(" " * (self.bar_width or 0))
        return super().render(task)


class _BytesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("bytes") is None:
            return Text("")  # per table: rows only (bytes are measured for the whole copy)
        done = human_bytes(task.fields["bytes"])
        total = task.fields.get("bytes_total")
        return Text(f"{done} / ~{human_bytes(total)}" if total else done, style="green")


class _EtaColumn(ProgressColumn):
    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        remaining = task.time_remaining
        return Text(f"ETA {_duration(remaining)}" if remaining is not None else "ETA ?", "yellow")


class _LiveStream:
    """A file-like that prints whole lines through a rich console (above any live display)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self.console.print(Text(line), highlight=False, markup=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self.console.print(Text(rest), highlight=False, markup=False, soft_wrap=True)


class _TerminalCopy(CopyProgressDisplay):
    def __init__(
        self, ui: TerminalUI, total_bytes: int | None, total_rows: int | None, visible: int = 4
    ) -> None:
        super().__init__(total_bytes, total_rows)
        self.ui = ui
        self.visible = visible
        self._task_ids: dict[str, Any] = {}
        self._closed = False
        fields = _progress_fields(0, 0, total_bytes, total_rows)
        self._overall = ui.copy_bars.add_task("copy", **fields)

    def _changed(self, table: str) -> None:
        progress = self.ui.copy_bars
        with self._lock:
            _, done_rows = self._tables[table]
            finished = table in self._done
            _, table_rows = self._table_totals.get(table, (None, None))
            task_id = self._task_ids.get(table)
            if task_id is None and not finished:
                fields = {**_progress_fields(0, 0, None, table_rows), "bytes": None}
                task_id = progress.add_task(f"  {table}", **fields)
                self._task_ids[table] = task_id
                stale = list(self._task_ids)[: -self.visible]
                for old in stale:
                    progress.update(self._task_ids[old], visible=False)
        if task_id is not None:
            if finished:
                progress.remove_task(task_id)
                with self._lock:
                    self._task_ids.pop(table, None)
            else:
                fields = {**_progress_fields(0, done_rows, None, table_rows), "bytes": None}
                progress.update(task_id, visible=True, **fields)
        self._changed_overall()

    def _changed_overall(self) -> None:
        overall = _progress_fields(
            self.bytes_done, self.rows_done, self.total_bytes, self.total_rows
        )
        self.ui.copy_bars.update(self._overall, **overall)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        progress = self.ui.copy_bars
        for task_id in list(self._task_ids.values()) + [self._overall]:
            with contextlib.suppress(KeyError):
                progress.remove_task(task_id)
        self.ui._release()
        elapsed = time.monotonic() - self.started
        self.ui.console.print(
            Text.assemble(
                ("✓ ", "green"), f"copied {self.summary(final=True)} in {_duration(elapsed)}"
            )
        )


class TerminalUI(UI):
    """Live rich display on stderr: spinners with elapsed time, copy bars with ETA."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.console = Console(file=self.stderr, highlight=False)
        self.activity = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.copy_bars = Progress(
            TextColumn("{task.description}"),
            _BarColumn(bar_width=30),
            _BytesColumn(),
            _RowsColumn(),
            _EtaColumn(),
            console=self.console,
        )
        self._live: Live | None = None
        self._users = 0
        self._lock = threading.RLock()
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._route_logging()

    def _route_logging(self) -> None:
        """Our log lines must pass through the console, or the live display garbles them."""
        stream = _LiveStream(self.console)
        for handler in logging.getLogger("render_rotator").handlers:
            if getattr(handler, "_render_rotator", False) and isinstance(
                handler, logging.StreamHandler
            ):
                self._handlers.append((handler, handler.stream))
                handler.setStream(stream)

    def _acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._live is None:
                self._live = Live(
                    Group(self.activity, self.copy_bars),
                    console=self.console,
                    refresh_per_second=8,
                    transient=True,
                    redirect_stdout=False,
                    redirect_stderr=True,
                )
                self._live.start()

    def _release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._live is not None:
                self._live.stop()
                self._live = None

    @contextlib.contextmanager
    def _activity(self, description: str) -> Iterator[float]:
        started = time.monotonic()
        self._acquire()
        task_id = self.activity.add_task(description, total=None)
        try:
            yield started
        finally:
            self.activity.remove_task(task_id)
            self._release()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseShown]:
        shown = PhaseShown()
        with self._activity(f"[bold]{name}[/]") as started:
            try:
                yield shown
            except BaseException:
                self.console.print(
                    Text.assemble(
                        ("✗ ", "bold red"),
                        (name, "bold"),
                        (f" failed after {_duration(time.monotonic() - started)}", "red"),
                    )
                )
                raise
        if shown.gave_way:
            self.console.print(
                Text.assemble(("… ", "yellow"), (name, "bold"), (f" {shown.gave_way}", "dim"))
            )
            return
        if shown.skipped:
            self.console.print(Text.assemble(("- ", "dim"), (name, "dim"), (" skipped", "dim")))
            return
        self.console.print(
            Text.assemble(
                ("✓ ", "green"),
                (name, "bold"),
                (f" {_duration(time.monotonic() - started)}", "dim"),
            )
        )

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        with self._activity(f"waiting for {what}") as started:
            yield
        if self.verbose > 0:
            self.console.print(
                Text(f"  {what}: after {_duration(time.monotonic() - started)}", style="dim")
            )

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyProgressDisplay:
        self._acquire()
        return _TerminalCopy(self, total_bytes, total_rows)

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
            self._users = 0
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()


def make_ui(
    as_json: bool = False,
    quiet: bool = False,
    verbose: int = 0,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> UI:
    """The UI for this process: Actions, a terminal, or plain lines; quiet shows no progress.

    Call after `logs.setup_logging` (the terminal UI routes its handler) and use as a context
    manager, or call `close()`, so the live display is taken down and the cursor restored.
    """
    kwargs: dict[str, Any] = {
        "as_json": as_json,
        "quiet": quiet,
        "verbose": verbose,
        "stdout": stdout,
        "stderr": stderr,
    }
    if github.in_actions():
        return ActionsUI(**kwargs)
    if quiet:
        return UI(**kwargs)
    err = stderr or sys.stderr
    probe = Console(file=err)
    if probe.is_terminal and not probe.is_dumb_terminal:
        return TerminalUI(**kwargs)
    return PlainUI(**kwargs)
