"""The terminal UI: under a real pseudo-terminal it shows live progress and a colored report;
piped, it prints plain lines without a single escape code; the copy watcher reports a running
COPY per table; the report's wording and byte counts."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from render_rotator.postgres.progress import CopyWatcher
from render_rotator.ui import CopyProgressDisplay, _progress_fields, human_bytes, report_lines
from tests.sample_report import REPORT

UI_PROGRAM = textwrap.dedent(
    """
    import json, logging, sys, time
    from render_rotator.logs import setup_logging
    from render_rotator.ui import make_ui
    as_json = "--json" in sys.argv
    setup_logging(0)
    report = json.loads(sys.argv[1])
    log = logging.getLogger("render_rotator.demo")
    with make_ui(as_json=as_json) as ui:
        with ui.phase("inspect"):
            log.info("found the old database")
        with ui.phase("provision"), ui.waiting("dpg-new-a to become available"):
            time.sleep(0.4)
        with ui.phase("copy"), ui.copy_progress(total_bytes=200_000, total_rows=5000) as cp:
            cp.start_table("public.users", 120_000)
            for i in range(1, 9):
                cp.update("public.users", 0, i * 375)
                cp.update("public.orders", 0, i * 250)
                cp.measure_bytes(i * 25_000)  # the target's size on disk
                time.sleep(0.06)
            cp.table_done("public.users")
            cp.table_done("public.orders")
        ui.final_report(report)
    if as_json:
        print(json.dumps(report))
    """
)

ESC = "\x1b"
COLOR_SGR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])(?:;[0-9]+)*m")


def _program(tmp_path: Path) -> list[str]:
    path = tmp_path / "ui_program.py"
    path.write_text(UI_PROGRAM)
    return [sys.executable, str(path), json.dumps(REPORT)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "NO_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40", **extra)
    env.pop("FORCE_COLOR", None)
    return env


def _run_in_pty(argv: list[str], env: dict[str, str], stdout_pipe: bool = False) -> tuple[str, str]:
    """Run with stderr (and stdout unless `stdout_pipe`) on a pseudo-terminal."""
    master, slave = os.openpty()
    stdout: Any = subprocess.PIPE if stdout_pipe else slave
    proc = subprocess.Popen(argv, stdin=slave, stdout=stdout, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    piped = proc.stdout.read().decode() if stdout_pipe and proc.stdout else ""
    assert proc.wait(timeout=10) == 0
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace"), piped


def test_terminal_shows_live_progress_and_a_colored_report(tmp_path: Path) -> None:
    screen, _ = _run_in_pty(_program(tmp_path), _env())
    assert ESC + "[?25l" in screen  # the live display hides the cursor...
    assert ESC + "[?25h" in screen  # ...and gives it back
    assert "waiting for dpg-new-a to become available" in screen
    assert re.search(r"0:00:0\d", screen)  # elapsed time while waiting
    assert "public.users" in screen and "public.orders" in screen
    assert re.search(r"[\d.]+ KiB / ~195\.3 KiB", screen)  # bytes done of the estimate
    assert re.search(r"\d[\d,]* rows", screen)
    assert "ETA " in screen
    assert "found the old database" in screen  # log lines still shown, above the display
    assert "copied 195.3 KiB, 5,000 of 5,000 rows, 2/2 tables done" in screen
    assert COLOR_SGR.search(screen)  # a colored final report
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "✓ myapp-db rotated" in plain
    assert re.search(r"new\s+dpg-new-a \(myapp-db-20250125\), PostgreSQL 16", plain)
    assert re.search(r"copy\s+done\s+3\.5s", plain)


def test_no_color_is_honoured_on_a_terminal(tmp_path: Path) -> None:
    screen, _ = _run_in_pty(_program(tmp_path), _env(NO_COLOR="1"))
    assert "ETA " in screen  # still live progress...
    assert not COLOR_SGR.search(screen)  # ...but no color


def test_piped_output_is_plain_lines(tmp_path: Path) -> None:
    run = subprocess.run(_program(tmp_path), capture_output=True, text=True, env=_env())
    assert run.returncode == 0, run.stderr
    assert ESC not in run.stdout and ESC not in run.stderr
    assert run.stdout.splitlines() == report_lines(REPORT)
    assert run.stdout.startswith("myapp-db: rotated to dpg-new-a\n")
    err = run.stderr.splitlines()
    for expected in (
        "phase inspect: started",
        "found the old database",
        "waiting for dpg-new-a to become available",
        "phase copy: done in",
        "copy: 195.3 KiB, 5,000 of 5,000 rows, 2/2 tables done in",
    ):
        assert any(expected in line for line in err), expected
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|DEBUG)", line) for line in err)


def test_json_keeps_stdout_to_one_object_even_on_a_terminal(tmp_path: Path) -> None:
    screen, stdout = _run_in_pty(_program(tmp_path) + ["--json"], _env(), stdout_pipe=True)
    assert json.loads(stdout) == REPORT
    assert "ETA " in screen  # progress still shown, on stderr
    assert "✓ myapp-db rotated" not in screen  # the JSON is the report


class _Recorder(CopyProgressDisplay):
    def __init__(self) -> None:
        super().__init__(total_rows=2000)
        self.events: list[tuple[str, str, int, int]] = []

    def update(self, table: str, bytes_done: int, rows_done: int) -> None:
        super().update(table, bytes_done, rows_done)
        self.events.append(("update", table, bytes_done, rows_done))

    def table_done(self, table: str) -> None:
        super().table_done(table)
        self.events.append(("done", table, self.bytes_done, self.rows_done))


class _SlowRows:
    """A file-like COPY source handing over 100 rows (12 KB, past libpq's buffer) per 40 ms."""

    def __init__(self, rows: int) -> None:
        self.lines = [f"{i}\t{'x' * 110}\n" for i in range(rows)]

    def read(self, size: int = -1) -> str:
        if not self.lines:
            return ""
        time.sleep(0.04)
        chunk, self.lines = self.lines[:100], self.lines[100:]
        return "".join(chunk)

    readline = read


def test_copy_watcher_reports_a_running_copy_per_table(fresh_db: str) -> None:
    import psycopg2

    conn = psycopg2.connect(fresh_db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE TABLE "Users" (id int, name text)')
    progress = _Recorder()
    expected = {'public."Users"': 2000}
    watcher = CopyWatcher(fresh_db, progress, interval=0.05, expected_rows=expected)
    with watcher, conn.cursor() as cur:
        cur.copy_expert('COPY "Users" FROM STDIN', _SlowRows(2000))
    conn.close()
    running = [e for e in progress.events if e[0] == "update" and 0 < e[3] < 2000]
    assert running, "no progress seen while the COPY ran"
    assert all(e[1] == 'public."Users"' for e in progress.events)
    assert [e[3] for e in running] == sorted(e[3] for e in running)  # rows only grow
    assert progress.measured_bytes is not None and progress.bytes_done > 0  # size on disk
    assert progress.events[-1][0] == "done" and progress.rows_done == 2000
    assert progress.summary().startswith(f"{human_bytes(progress.bytes_done)}, 2,000 of 2,000 rows")


def test_copy_watcher_never_breaks_the_copy() -> None:
    progress = CopyProgressDisplay()
    with CopyWatcher("postgresql://nobody@127.0.0.1:1/none", progress, connect_timeout=1):
        pass
    assert progress.rows_done == 0


# -- wording and byte counts of the report and the progress ---------------------------------


def test_report_headline_does_not_repeat_the_outcome() -> None:
    rotated = {"database": "db", "ok": True, "rotated": True, "message": "rotated to dpg-2"}
    not_due = {"database": "db", "ok": True, "due": False, "message": "not due: expires in 9"}
    failed = {"database": "db", "ok": False, "exit_code": 1, "message": "boom in phase copy"}
    assert report_lines(rotated)[0] == "db: rotated to dpg-2"
    assert report_lines(not_due)[0] == "db: not due: expires in 9"
    assert report_lines(failed)[0] == "db: failed - boom in phase copy"


def test_the_database_is_called_old_only_beside_a_new_one() -> None:
    old = {"id": "dpg-1", "name": "db", "expires_at": None}
    alone = report_lines({"database": "db", "due": None, "old": old, "message": "nothing"})
    assert any(line.startswith("  database:") and "never" in line for line in alone)
    assert not any(line.startswith("  old:") for line in alone)
    both = report_lines({"database": "db", "old": old, "new": {"id": "dpg-2", "name": "db-2"}})
    assert any(line.startswith("  old:") for line in both)


def test_copy_progress_never_shows_done_above_the_total() -> None:
    progress = CopyProgressDisplay(total_bytes=2_500_000, total_rows=10)
    progress.measure_bytes(7_600_000)  # the source's size was an underestimate
    assert progress.bytes_total == 7_600_000
    assert "7.2 MiB of ~7.2 MiB (100%)" in progress.summary()
    fields = _progress_fields(7_600_000, 5, 2_500_000, None)
    assert fields["completed"] <= fields["total"]
    assert progress.summary(final=True).startswith("7.2 MiB, ")  # measured, no estimate
