"""Writes the freeze does not stop never get lost: the old database is kept and named.

A client with its own connection (a cron job, a worker) keeps writing to the old database
while its services are suspended. The rows it changes after the snapshot the copy was taken
from exist only there, so the rotation must keep that database, say which tables changed,
and exit non-zero, whether it runs create-first or delete-first.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import psycopg2
import pytest

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    execute,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


class Updater(threading.Thread):
    """Changes one row's value over and over (the row count never changes), committing
    each time, through its own connection as the database's owner; read-only sessions
    (the fence) make its writes fail, which it ignores."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.committed = 0
        self._stop_event = threading.Event()
        self._first = threading.Event()

    def run(self) -> None:
        conn = None
        while not self._stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(**PgURL.parse(self.url).psycopg2_kwargs(5))
                with conn, conn.cursor() as cur:
                    cur.execute("UPDATE writes SET note = note || '.' WHERE id = 1")
                self.committed += 1
                self._first.set()
            except psycopg2.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                conn = None
                self._stop_event.wait(0.02)
        if conn is not None:
            conn.close()

    def wait_first(self) -> None:
        assert self._first.wait(10), "the updater never committed"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _note(url: str) -> str:
    return str(execute(url, "SELECT note FROM writes WHERE id = 1")[0][0])


@pytest.mark.parametrize("strategy", ["create-first", "delete-first"])
def test_a_writer_outside_the_freeze_keeps_the_old_database(
    emu: RenderEmulator, tmp_path: Path, strategy: str
) -> None:
    plan = PAID_PLAN if strategy == "create-first" else "free"
    app = make_app(emu, plan=plan)
    execute(app.external_url, "INSERT INTO writes (note) VALUES ('n')")
    config = write_config(tmp_path, app, strategy=strategy)  # freeze = suspend
    updater = Updater(app.external_url)
    updater.start()
    try:
        updater.wait_first()
        result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    finally:
        updater.stop()
    assert result.exit_code == 3, result.output
    report = report_of(result)
    assert report["ok"] is False and report["rotated"] is False
    # the old database exists, holds every committed write, and is in use again
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]
    # every write the updater saw commit is there; one more may be, whose commit reached the
    # server as its session was ended (the fence) and was never acknowledged
    note = _note(app.external_url)
    assert note.strip(".") == "n" and len(note) - 1 in (updater.committed, updater.committed + 1)
    assert "No cutover" in report["message"]
    assert "public.writes" in report["message"], report["message"]
    if strategy == "delete-first":
        assert f"refusing to delete the old database {app.postgres_id}" in report["message"]
        assert "run `render-rotator rotate` again" in report["message"]
    else:
        assert "the old database changed after the backup was taken" in report["message"]
    assert report["verification"]["old_database_changed"]["tables"] == ["public.writes"]
    assert not journal_file(config, app).exists()
    execute(app.external_url, "INSERT INTO writes (note) VALUES ('still writable')")


def test_a_write_after_the_verified_copy_stops_the_retire(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """create-first: a row changed in the old database while the targets are repointed
    (after the copy was verified, before the fence) is kept: the old database is not
    deleted, the changed table named, and the exit code is 3."""
    app = make_app(emu, plan=PAID_PLAN)
    execute(app.external_url, "INSERT INTO writes (note) VALUES ('n')")
    config = write_config(tmp_path, app, strategy="create-first")

    def write(_method: str, _path: str) -> None:
        execute(app.external_url, "UPDATE writes SET note = 'late' WHERE id = 1")

    emu.faults.on_request(write, method="PUT", path_prefix="/services")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 3, result.output
    report = report_of(result)
    new_id = report["new"]["id"]
    assert sorted(pg["id"] for pg in app.databases()) == sorted([app.postgres_id, new_id])
    assert _note(app.external_url) == "late"  # the write is still there
    message = report["message"]
    assert f"refusing to retire the old database {app.postgres_id}" in message
    assert "public.writes" in message and f"Every target already uses {new_id}" in message
    assert report["old"]["deleted"] is False
    assert report["verification"]["mode"] == "content"
    assert report["verification"]["old_database_changed"]["tables"] == ["public.writes"]


@pytest.mark.parametrize("strategy", ["create-first", "delete-first"])
def test_database_settings_travel_with_the_rotation(
    emu: RenderEmulator, tmp_path: Path, strategy: str
) -> None:
    """`ALTER DATABASE ... SET` lives outside the dump's sections: both paths set it on
    the new database, and the content check would refuse a copy without it."""
    plan = PAID_PLAN if strategy == "create-first" else "free"
    app = make_app(emu, plan=plan)
    dbname = PgURL.parse(app.external_url).dbname
    execute(app.external_url, f"ALTER DATABASE \"{dbname}\" SET work_mem = '6MB'")
    execute(app.external_url, f'ALTER DATABASE "{dbname}" SET search_path = app, public')
    config = write_config(tmp_path, app, strategy=strategy)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    new_url = emu.connection_info(report_of(result)["new"]["id"])["externalConnectionString"]
    assert execute(new_url, "SHOW work_mem") == [("6MB",)]
    assert execute(new_url, "SHOW search_path") == [("app, public",)]
    assert execute(new_url, "SHOW default_transaction_read_only") == [("off",)]


pytestmark = pytest.mark.usefixtures("no_faults_left")
