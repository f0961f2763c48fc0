"""One rotation at a time: the lease on the database itself, across processes and state dirs.

Two real `render-rotator rotate` processes with separate state directories (a laptop and the
scheduled job) start together against the emulator, many times: every time exactly one
rotates, the other is refused naming the first, and exactly one new database holds the data.
A crashed holder's lease is taken over after its TTL (at once on the same machine, when its
process is gone); a run whose lease was taken over stops before its next destructive step.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from render_rotator import rotate
from render_rotator.postgres.inventory import compare_inventories
from render_rotator.postgres.stamp import Stamp, read_stamp, split_comment, update_stamp
from render_rotator.render import RenderClient
from render_rotator.rotation.lease import Lease, _machine, check_free, left_frozen
from render_rotator.rotation.observer import LogUI
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    subprocess_env,
    write_config,
)

REPO = Path(__file__).resolve().parent.parent


# -- the record on the database -----------------------------------------------------------


def test_stamp_is_compare_and_set_and_keeps_the_users_comment(fresh_db: str) -> None:
    dbname = fresh_db.rsplit("/", 1)[1].split("?")[0]
    execute(fresh_db, f"COMMENT ON DATABASE \"{dbname}\" IS 'line one\nline two'")

    def bump(stamp: Stamp, _now: Any) -> Stamp:
        return {**stamp, "n": stamp.get("n", 0) + 1}

    def worker() -> None:
        for _ in range(15):
            update_stamp(fresh_db, bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_stamp(fresh_db) == {"n": 60}  # no update lost: each read-decide-write is atomic
    [(comment,)] = execute(
        fresh_db,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = current_database()",
    )
    assert split_comment(comment) == ("line one\nline two", {"n": 60})
    update_stamp(fresh_db, lambda _s, _n: {})
    assert execute(
        fresh_db,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = current_database()",
    ) == [("line one\nline two",)]


# -- two runs at once ---------------------------------------------------------------------


def _start(emu: RenderEmulator, config: Path) -> subprocess.Popen[str]:
    env = subprocess_env(emu)
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=config.parent,
    )


@pytest.mark.parametrize("round_", range(10))
def test_two_runs_started_together_rotate_exactly_once(
    emu: RenderEmulator, tmp_path: Path, round_: int
) -> None:
    plan = "free" if round_ % 2 == 0 else PAID_PLAN  # delete-first, then create-first
    app = make_app(emu, plan=plan)
    before = inventory(app.external_url)
    laptop = write_config(tmp_path / "laptop", app)
    scheduled = write_config(tmp_path / "scheduled", app)
    procs = {laptop: _start(emu, laptop), scheduled: _start(emu, scheduled)}
    outputs = {cfg: proc.communicate(timeout=300) for cfg, proc in procs.items()}
    codes = {cfg: procs[cfg].returncode for cfg in procs}
    winners = [cfg for cfg, code in codes.items() if code == 0]
    assert len(winners) == 1, {str(c): (codes[c], outputs[c][1][-2000:]) for c in procs}
    [winner] = winners
    [loser] = [cfg for cfg in procs if cfg != winner]
    assert codes[loser] == 2, outputs[loser][1]

    report = json.loads(outputs[winner][0])
    assert_rotated(app, report, before, config=winner)  # exactly one new database, data intact

    errors = [ln for ln in outputs[loser][1].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, outputs[loser][1]
    line = errors[0]
    assert f"another render-rotator run is rotating {app.name}" in line
    assert f"host {socket.gethostname()}" in line and f"pid {procs[winner].pid}" in line
    assert f"state dir {winner.parent / 'state'}" in line and "started 20" in line
    assert "nothing was changed" in line
    # the loser wrote nothing: no journal, no backup
    assert not journal_file(loser, app).exists()
    backups = loser.parent / "backups"
    assert not backups.exists() or not any(backups.iterdir())


# -- stale and lost leases ----------------------------------------------------------------


def _plant(url: str, **overrides: Any) -> None:
    """Write a lease as another run would have (server time, `ttl` seconds)."""
    ttl = overrides.pop("ttl_left", 3600)

    def plant(stamp: Stamp, now: Any) -> Stamp:
        lease = {
            "token": "0" * 32,
            "database": "x",
            "host": "ci-runner-7",
            "machine": "another-machine",
            "pid": 4242,
            "state_dir": "/home/runner/.render-rotator",
            "started_at": (now - timedelta(minutes=3)).isoformat(),
            "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=ttl)).isoformat(),
            "ttl": 120,
            **overrides,
        }
        return {**stamp, "lease": lease}

    update_stamp(url, plant)


def test_a_live_lease_refuses_and_an_expired_one_is_taken_over(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app)
    before = inventory(app.external_url)
    untouched = app.snapshot()
    _plant(app.external_url)  # another machine's run, alive (heartbeat just now)

    refused = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert refused.exit_code == 2, refused.output
    [line] = error_lines(refused)
    assert "another render-rotator run is rotating" in line
    assert "host ci-runner-7 (pid 4242, state dir /home/runner/.render-rotator)" in line
    assert "expires by itself 120s after its last heartbeat" in line
    assert app.snapshot() == untouched and not journal_file(config, app).exists()

    _plant(app.external_url, ttl_left=-1)  # that run died: no heartbeat for a whole TTL
    taken = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert taken.exit_code == 0, taken.output
    assert_rotated(app, report_of(taken), before, config=config)


def test_a_dead_process_on_this_machine_does_not_block(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],  # noqa: S603
                          capture_output=True, text=True, check=True)  # fmt: skip
    _plant(app.external_url, machine=_machine(), pid=int(dead.stdout), host=socket.gethostname())
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)


class _OnPhase(LogUI):
    def __init__(self, phase: str, action: Any) -> None:
        self.at, self.action = phase, action

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name == self.at:
            self.action()
        with super().phase(name):
            yield


def test_a_run_whose_lease_was_taken_over_stops_before_deleting(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Our process stalled past its TTL and another run took the lease: the guard re-confirms
    the lease right before deleting the old database, and stops."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    ui = _OnPhase("retire", lambda: _plant(app.external_url))
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        result = rotate(config, yes=True, client=client, ui=ui)
    [report] = result.reports
    assert report.exit_code == 1
    assert "taken over by another run on host ci-runner-7" in report.message
    assert app.postgres_id in [pg["id"] for pg in app.databases()]  # not deleted
    new_id = report.new["id"] if report.new else None
    assert new_id is not None
    new_url = emu.connection_info(new_id)["externalConnectionString"]
    assert compare_inventories(inventory(app.external_url), inventory(new_url)).equal


# -- what a run froze, named in its lease --------------------------------------------------


def test_the_lease_names_what_its_run_froze_and_hands_it_to_the_next_run(fresh_db: str) -> None:
    """Written before each freeze, dropped after each thaw; a run that ends with services
    still frozen leaves its record expired but naming them; the next run inherits them."""
    first = Lease(database="app", state_dir="/a", ttl=60)
    first.acquire("dpg-old", fresh_db)
    first.note_frozen("srv-web", "maintenance")
    first.note_frozen("srv-worker", "suspend")
    held = read_stamp(fresh_db)["lease"]
    assert held["frozen"] == {"srv-web": "maintenance", "srv-worker": "suspend"}
    first.note_thawed("srv-worker")
    assert read_stamp(fresh_db)["lease"]["frozen"] == {"srv-web": "maintenance"}
    first.release()  # srv-web still frozen: the record stays, expired
    left = read_stamp(fresh_db)["lease"]
    assert left["frozen"] == {"srv-web": "maintenance"} and left["expires_at"] <= left["renewed_at"]
    assert left_frozen(fresh_db) == {"srv-web": "maintenance"}
    check_free(fresh_db, database="app")  # expired: blocks no one

    second = Lease(database="app", state_dir="/b", ttl=60)
    second.acquire("dpg-old", fresh_db)
    assert second.inherited == {"srv-web": "maintenance"}
    assert read_stamp(fresh_db)["lease"]["frozen"] == {"srv-web": "maintenance"}  # handed on
    assert left_frozen(fresh_db) == {}  # a live run holds it now
    second.note_thawed("srv-web")
    second.release()
    assert "lease" not in read_stamp(fresh_db)  # nothing left frozen: removed


def test_a_live_lease_names_nothing_to_take_over(fresh_db: str) -> None:
    _plant(fresh_db, frozen={"srv-web": "suspend"})
    assert left_frozen(fresh_db) == {}  # its run is alive: its freeze is its own
    _plant(fresh_db, ttl_left=-1, frozen={"srv-web": "suspend", "srv-x": "unknown"})
    assert left_frozen(fresh_db) == {"srv-web": "suspend"}


def _suspend(emu: RenderEmulator, service_id: str) -> None:
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        client.suspend_service(service_id)


def test_another_machines_dead_run_left_the_app_suspended_and_this_run_thaws_it(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """A CI runner died after suspending the app (its lease expired, naming the service);
    a scheduled run elsewhere, not due by the calendar, finishes that rotation."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    _suspend(emu, app.service_id)
    _plant(app.external_url, ttl_left=-1, frozen={app.service_id: "suspend"})
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--if-expiring-within", "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)  # running again


def test_a_dead_runs_lease_naming_a_service_running_again_changes_nothing(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Someone has thawed the service the dead run froze: nothing is left frozen for the
    app, so a run that is not due stays a no-op."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    _plant(app.external_url, ttl_left=-1, frozen={app.service_id: "suspend"})
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--if-expiring-within", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["rotated"] is False and report["message"].startswith("not due"), report
    assert app.snapshot() == untouched
