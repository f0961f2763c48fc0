"""create-first copies beside its backup, both in one snapshot of the old database: a real
`render-rotator rotate` caught while both work (each waiting on a table lock an app
session holds) is killed and resumed, or sees its backup fail and stops before any
cutover, with the copy stopped and nothing deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg2

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    App,
    assert_rotated,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    subprocess_env,
    write_config,
)

#: the sessions of each side on the old database: pg_dump's, and the copy engine's
BACKUP, COPY = "pg_dump", "render-rotator-copy"


def _old_url(app: App) -> str:
    return app.external_url + "?sslmode=require"


@contextmanager
def _table_locked(app: App) -> Iterator[None]:
    """An app session holding an ACCESS EXCLUSIVE lock on one table: whatever reads it waits."""
    holder = psycopg2.connect(**PgURL.parse(_old_url(app)).psycopg2_kwargs(10))
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE writes IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        holder.rollback()
        holder.close()


def _waiting(app: App) -> dict[str, int]:
    """pid of each side's session waiting for the lock, by application name."""
    rows = execute(
        _old_url(app),
        "SELECT application_name, min(pid) FROM pg_stat_activity WHERE datname = "
        "current_database() AND wait_event_type = 'Lock' GROUP BY 1",
    )
    return {str(name): int(pid) for name, pid in rows}


def _start_rotate(app: App, config: Path, emu: RenderEmulator) -> subprocess.Popen[str]:
    env = subprocess_env(emu)
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=config.parent,
        text=True,
        start_new_session=True,
    )


def _lock_once_provisioned(app: App, config: Path, proc: subprocess.Popen[str]) -> Any:
    """Take the table lock once the new database is provisioned (what reads the old one's
    size is behind; the freeze, the backup and the copy are ahead)."""
    deadline = time.monotonic() + 60
    while True:
        with suppress(FileNotFoundError, ValueError):
            entry = _journal(config, app)["phases"].get("provision", {})
            if entry.get("status") == "done":
                return _table_locked(app)
        if proc.poll() is not None:
            raise AssertionError(f"rotate ended before provisioning: {proc.communicate()}")
        assert time.monotonic() < deadline, "rotate never provisioned"
        time.sleep(0.002)


def _until_both_wait(app: App, proc: subprocess.Popen[str]) -> dict[str, int]:
    """Poll until the backup and the copy both wait on the lock: they run at once."""
    deadline = time.monotonic() + 90
    while True:
        waiting = _waiting(app)
        if BACKUP in waiting and COPY in waiting:
            return waiting
        if proc.poll() is not None:
            raise AssertionError(f"rotate ended before both sides ran: {proc.communicate()}")
        assert time.monotonic() < deadline, f"the backup and the copy never ran together: {waiting}"
        time.sleep(0.05)


def _journal(config: Path, app: App) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(journal_file(config, app).read_text())
    return data


def test_killed_while_the_backup_and_the_copy_both_run_then_resumed(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    proc = _start_rotate(app, config, emu)
    try:
        with _lock_once_provisioned(app, config, proc):
            waiting = _until_both_wait(app, proc)
            at_kill = _journal(config, app)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # pg_dump ran in a process group of its own: end the orphan through its session
            execute(_old_url(app), "SELECT pg_terminate_backend(%s)", (waiting[BACKUP],))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # both were journaled as running, neither done: resume runs them again
    assert at_kill["phases"]["backup"]["status"] == "started"
    assert at_kill["phases"]["copy"]["status"] == "started"
    assert at_kill["state"]["copy_started"] is True
    assert "backup" not in at_kill["state"]  # no backup recorded yet

    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    report = report_of(resumed)
    assert_rotated(app, report, before, config=config)
    assert report["new"]["id"] == at_kill["state"]["new_id"]  # emptied and reused, not a second
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["backup"]["status"] == phases["copy"]["status"] == "done"
    assert phases["backup"]["attempts"] == phases["copy"]["attempts"] == 2


def test_a_backup_failing_while_the_copy_runs_stops_the_copy_and_the_cutover(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    databases = [pg["id"] for pg in app.databases()]
    proc = _start_rotate(app, config, emu)
    try:
        with _lock_once_provisioned(app, config, proc):
            waiting = _until_both_wait(app, proc)
            # the backup fails while the copy runs (its server session is ended)
            execute(_old_url(app), "SELECT pg_terminate_backend(%s)", (waiting[BACKUP],))
            # the copy was stopped with it: the rotation lands while the lock is still held
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err
    report = json.loads(out)
    message = report["message"]
    assert message.startswith("failed in phase backup: pg_dump"), message
    assert "No cutover" in message and "still in use" in message
    phases = {p["name"]: p["status"] for p in report["phases"]}
    assert phases["backup"] == phases["copy"] == "failed"
    assert phases.get("verify") is None and phases.get("retire") is None
    # nothing changed for the app: its database (the only one), its targets, its service
    assert [pg["id"] for pg in app.databases()] == databases
    assert app.env()["DATABASE_URL"] == app.internal_url
    assert emu.service(app.service_id)["suspended"] == "not_suspended"
    assert inventory(app.external_url) == before
    assert not journal_file(config, app).exists()  # closed: nothing to resume
    assert list((tmp_path / "backups").glob("*.dump")) == []


def test_sigterm_while_both_run_stops_both_and_lands_on_the_old_database(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    databases = [pg["id"] for pg in app.databases()]
    proc = _start_rotate(app, config, emu)
    try:
        with _lock_once_provisioned(app, config, proc):
            _until_both_wait(app, proc)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            # while the lock is still held: neither side's session waits for it any more
            # (its queries were cancelled, its tools killed); polled, a backend may linger
            deadline = time.monotonic() + 30
            while _waiting(app):
                assert time.monotonic() < deadline, _waiting(app)
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["message"].startswith("interrupted in phase"), report["message"]
    assert "still in use" in report["message"]
    assert emu.service(app.service_id)["suspended"] == "not_suspended"
    assert [pg["id"] for pg in app.databases()] == databases


def test_a_copy_failing_after_its_backup_finished_keeps_that_backup_recorded(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    proc = _start_rotate(app, config, emu)
    try:
        deadline = time.monotonic() + 60
        while True:  # once provisioned (its marker written), the new database takes no session
            with suppress(FileNotFoundError, ValueError):
                journal = _journal(config, app)
                if journal["phases"].get("provision", {}).get("status") == "done":
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "never provisioned"
            time.sleep(0.002)
        new = emu.connection_info(journal["state"]["new_id"])
        [(statement,)] = execute(
            new["externalConnectionString"] + "?sslmode=require",
            "SELECT format('ALTER DATABASE %%I CONNECTION LIMIT 0', current_database())",
        )
        execute(new["externalConnectionString"] + "?sslmode=require", statement)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["message"].startswith("failed in phase copy: cannot connect"), report["message"]
    assert "No cutover" in report["message"]
    phases = {p["name"]: p["status"] for p in report["phases"]}
    assert phases["backup"] == phases["copy"] == "failed"
    # the backup had finished (the copy could not even connect): kept, with its manifest
    archive = Path(report["backup"]["path"])
    assert archive.exists() and Path(str(archive) + ".json").exists()
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]


def test_one_job_backs_up_to_one_file_beside_a_serial_copy(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", jobs=1)
    before = inventory(app.external_url)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    archive = Path(report["backup"]["path"])
    assert archive.is_file()  # pg_dump -Fc: one file, not a directory archive
    assert report["verification"]["mode"] == "content"
