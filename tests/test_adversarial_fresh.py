"""A rotation SIGKILLed at every step of create-first and of auto's fallback, then finished
by `rotate` on a fresh machine (no journal; the backup directory kept, as a CI cache or a
mounted volume keeps it): exactly one new database, the data intact, the app thawed, and the
old database deleted only after a verified backup.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from render_rotator.postgres.stamp import read_stamp
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    DONE,
    PAID_PLAN,
    App,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    make_app,
    report_of,
    rotate_and_kill,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.usefixtures("slow_api")

CASES = [
    *[
        pytest.param("create-first", PAID_PLAN, phase, DONE, 1, id=f"create-first-after-{phase}")
        for phase in ("provision", "freeze", "backup", "copy", "verify")
    ],
    pytest.param("create-first", PAID_PLAN, "repoint", DONE, 1, id="create-first-after-repoint"),
    pytest.param("create-first", PAID_PLAN, "provision", ("started",), 1, id="cf-in-provision"),
    pytest.param("create-first", PAID_PLAN, "copy", ("started",), 1, id="cf-in-copy"),
    pytest.param("auto", "free", "provision", ("deferred",), 1, id="auto-provision-gave-way"),
    *[
        pytest.param("auto", "free", phase, DONE, 1, id=f"auto-after-{phase}")
        for phase in ("freeze", "backup", "delete-old", "copy", "verify", "repoint")
    ],
    pytest.param("auto", "free", "provision", ("started",), 2, id="auto-in-provision-2"),
    pytest.param("auto", "free", "provision", DONE, 2, id="auto-after-provision-2"),
]


@pytest.mark.parametrize(("strategy", "plan", "phase", "statuses", "attempt"), CASES)
def test_killed_then_rotated_from_a_fresh_state_dir(
    emu: RenderEmulator,
    tmp_path: Path,
    strategy: str,
    plan: str,
    phase: str,
    statuses: tuple[str, ...],
    attempt: int,
) -> None:
    app = make_app(emu, plan=plan)
    config = write_config(tmp_path, app, strategy=strategy)
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, phase, statuses, attempt)
    shutil.rmtree(tmp_path / "state")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)


def test_a_scheduled_run_finishes_a_create_first_rotation_killed_after_the_repoint(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The daily job (`--if-expiring-within`) on a fresh runner: the app must not stay frozen
    on a repointed but never deployed rotation, and the old database must be retired."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    rotate_and_kill(emu, app, config, "repoint", DONE)
    shutil.rmtree(tmp_path / "state")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--if-expiring-within", "--json")
    assert result.exit_code == 0, result.output
    assert emu.service(app.service_id)["suspended"] == "not_suspended"
    assert len(app.databases()) == 1, app.databases()


@pytest.mark.parametrize("phase", ["freeze", "backup"])
def test_rotate_restart_after_a_kill_in_auto_fallback_thaws_the_app(
    emu: RenderEmulator, tmp_path: Path, phase: str
) -> None:
    """`rotate --restart` sets the journal aside but still knows what it froze."""
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="auto")
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, phase, DONE)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--restart", "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)


def _add_user_suspended_worker(app: App, config: Path) -> str:
    """A worker the user suspended themselves, reading the database too (a target)."""
    worker = app.emu.add_service(
        f"{app.name}-worker",
        app.owner_id,
        {"DATABASE_URL": app.internal_url},
        type="background_worker",
        suspended=True,
    )
    with config.open("a") as out:
        out.write(f'\n  [[database.target]]\n  service = "{worker}"\n  key = "DATABASE_URL"\n')
    return worker


@pytest.mark.parametrize(
    ("freeze", "phase"),
    [
        ("suspend", "freeze"),
        ("maintenance", "freeze"),
        ("suspend", "delete-old"),  # the old database is gone: finished from the backup
        ("maintenance", "provision"),  # ... into the new one the dead run created
    ],
)
def test_a_fresh_run_thaws_what_the_dead_run_froze_and_nothing_the_user_suspended(
    emu: RenderEmulator, tmp_path: Path, freeze: str, phase: str
) -> None:
    """The dead run's lease names what it froze (and how): exactly that is thawed."""
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="auto", freeze=freeze)
    worker = _add_user_suspended_worker(app, config)
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, phase, DONE, 2 if phase == "provision" else 1)
    web = emu.service(app.service_id)
    frozen = (
        web["serviceDetails"]["maintenanceMode"]["enabled"]
        if freeze == "maintenance"
        else web["suspended"] == "suspended"
    )
    assert frozen, web  # by the dead run
    shutil.rmtree(tmp_path / "state")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    info = assert_rotated(app, report, before, config=config)  # the web service runs again
    assert emu.service(worker)["suspended"] == "suspended"  # the user's stays as it was
    assert emu.env_vars(worker)["DATABASE_URL"] == info["internalConnectionString"]
    assert any(app.service_id in n and "interrupted run" in n for n in report["notes"])
    assert not any(worker in n and "interrupted run" in n for n in report["notes"])
    new_url = info["externalConnectionString"]
    assert "lease" not in read_stamp(new_url)  # released: nothing left frozen to hand on


@pytest.mark.parametrize(
    "command",
    [["rotate", "--yes", "--if-expiring-within", "1"], ["resume"]],
    ids=["scheduled-not-due", "resume"],
)
def test_what_a_dead_run_left_frozen_is_finished_even_when_not_due(
    emu: RenderEmulator, tmp_path: Path, command: list[str]
) -> None:
    """Thirty days from expiry, a scheduled run (or `resume`) on a fresh machine would say
    "not due" (or "nothing to resume") and leave the app down: the dead run's lease says
    its rotation is unfinished."""
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="auto")
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, "backup", DONE)
    shutil.rmtree(tmp_path / "state")
    result = run_cli(emu, command[0], "-c", str(config), *command[1:], "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)


def test_a_repointed_new_database_that_changed_since_is_left_alone(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Killed after the repoint, then a row lands in the new database (someone resumed the
    app by hand): it no longer holds what the old one holds, so neither can be retired:
    nothing changes and the message says how to decide."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    at_kill = rotate_and_kill(emu, app, config, "repoint", DONE)
    new_id = at_kill["state"]["new_id"]
    new_url = emu.connection_info(new_id)["externalConnectionString"]
    execute(new_url, "INSERT INTO writes (note) VALUES ('after the repoint')")
    shutil.rmtree(tmp_path / "state")
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert f"every target uses {new_id}" in line and app.postgres_id in line
    assert "no longer hold the same data" in line and "nothing was changed" in line
    assert app.snapshot() == untouched


def test_a_finished_keep_old_rotation_is_not_taken_for_an_interrupted_one(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """keep_old leaves the source beside the marked new database; the finished run's lease
    is gone, so the next rotation starts from the new database, the one in use."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", keep_old=True)
    before = inventory(app.external_url)
    done = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert done.exit_code == 0, done.output
    info = assert_rotated(app, report_of(done), before, keep_old=True, config=config)
    new_id = report_of(done)["new"]["id"]
    stamp = read_stamp(info["externalConnectionString"])
    assert stamp["marker"]["old_id"] == app.postgres_id and "lease" not in stamp
    plan = run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    report = report_of(plan)
    assert report["old"]["id"] == new_id, report
    assert not any("half-done" in n for n in report["notes"]), report["notes"]


def test_resume_finishes_a_rotation_killed_after_the_repoint_without_its_backup(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The backup directory went with the machine too: the old database still exists, so a
    new backup of it is taken (inside the freeze the dead run left) before it is retired."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    at_kill = rotate_and_kill(emu, app, config, "repoint", DONE)
    shutil.rmtree(tmp_path / "state")
    shutil.rmtree(tmp_path / "backups")
    result = run_cli(emu, "resume", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"]["id"] == at_kill["state"]["new_id"]  # finished, not a third one
    assert_rotated(app, report, before, config=config)
