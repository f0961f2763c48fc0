"""Rotations through the CLI while things go wrong, on the emulator with real PostgreSQL.

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0

Render answering 429 and 5xx at every API step (including answers lost after Render acted),
a deploy that fails, a copy that does not match, a database that never becomes available,
and a client that keeps writing when nothing freezes it. Each must end in a safe, stated
state: rotated exactly once, or back on the old database with nothing changed (exit 1/3),
or, when the old database is already gone, a backup and a `resume` that finishes the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    App,
    Writer,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    wait_for_rows,
    write_config,
)


def assert_back_on_old(app: App, untouched: dict, config: Path) -> None:
    """No cutover: the app is exactly as before (plus redeploys), the old database in use,
    writable, and the journal closed so the next rotate may start afresh."""
    now = app.snapshot()
    assert now["databases"] == untouched["databases"]
    assert now["env"] == untouched["env"] and now["group"] == untouched["group"]
    assert now["suspended"] == "not_suspended" and now["maintenance"] is False
    execute(app.external_url, "INSERT INTO writes (note) VALUES ('old still writable')")
    assert not journal_file(config, app).exists()


@pytest.mark.parametrize(
    ("fault", "statuses"),
    [
        ({"first_only": True}, (429, 503)),
        ({"first_only": True, "after_processing": True}, (502, 503)),
        ({"every": 3}, (429, 500)),
    ],
    ids=["each-step-429-or-503", "each-step-5xx-after-render-acted", "every-third-request"],
)
def test_429_and_5xx_at_every_api_step_are_ridden_out(
    emu: RenderEmulator, tmp_path: Path, fault: dict, statuses: tuple[int, ...]
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    start = len(emu.requests)
    # first_only: the first request of every distinct API call fails (429 or 5xx in turn);
    # with after_processing Render carries it out and only the answer is lost (creating the
    # database, triggering the deploy, deleting the old one...)
    emu.faults.flaky(statuses=statuses, retry_after=0.01, **fault)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    emu.faults.clear()
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)  # one database, one deploy
    seen = emu.requests[start:]
    failed = [(m, p) for m, p, status in seen if status in statuses]
    calls = {(m, p) for m, p, _ in seen}
    if fault.get("first_only"):
        assert sorted(set(failed)) == sorted(calls) and len(failed) == len(calls)
    else:
        assert len(failed) >= len(seen) // 3 - 1
    kinds = {(m, p.split("/")[1], p.rsplit("/", 1)[-1]) for m, p in failed}
    for step in [
        ("GET", "postgres", "connection-info"),
        ("POST", "services", "suspend"),
        ("POST", "services", "resume"),
        ("POST", "postgres", "postgres"),
        ("POST", "services", "deploys"),
        ("PUT", "services", "DATABASE_URL"),
        ("PUT", "env-groups", "DATABASE_URL"),
        ("DELETE", "postgres", app.postgres_id),
    ]:
        assert step in kinds or not fault.get("first_only"), step


def test_a_failed_deploy_is_rolled_back(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", freeze="maintenance")
    untouched = app.snapshot()
    emu.faults.fail_next_deploy(app.service_id, status="update_failed")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = report_of(result)
    assert report["ok"] is False and report["rotated"] is False
    [line] = error_lines(result)
    assert "deploy failed for" in line and "update_failed" in line
    assert "3 target(s) were put back on the old database" in line and "redeployed" in line
    assert "No cutover" in report["message"]
    assert_back_on_old(app, untouched, config)
    deploys = app.api_deploys()  # newest first: the rollback redeploy went live
    assert [d["status"] for d in deploys] == ["live", "update_failed"]
    kinds = [(d["rollback"], d["status"]) for d in report["deploys"]]
    assert kinds == [(False, "update_failed"), (True, "live")]
    # nothing is left half-done: the next rotation just works
    emu.faults.clear()
    again = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert report_of(again)["rotated"] is True


def test_a_failed_deploy_after_delete_first_is_resumed(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    before = inventory(app.external_url)
    emu.faults.fail_next_deploy(app.service_id)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    message = report_of(result)["message"]
    assert "holds the verified copy and every target uses it" in message
    assert "render-rotator resume" in message
    # a second rotate refuses: finish this one first
    refused = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert refused.exit_code == 2
    assert "unfinished rotation" in error_lines(refused)[0]
    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    report = report_of(resumed)
    # the failed deploy is not "one deploy per service went live": count the live one
    deploys = app.api_deploys()
    assert [d["status"] for d in deploys] == ["live", "build_failed"]
    emu_deploy = deploys[0]
    assert [d["deploy_id"] for d in report["deploys"]] == [emu_deploy["id"]]
    info = emu.connection_info(report["new"]["id"])
    assert app.env()["DATABASE_URL"] == info["internalConnectionString"]
    assert [pg["id"] for pg in app.databases()] == [report["new"]["id"]]
    after = inventory(info["externalConnectionString"])
    assert after.tables == before.tables and after.objects == before.objects


SEED_EXTRA = "CREATE TABLE injected (x int); INSERT INTO injected VALUES (1), (2)"


def test_a_new_database_that_is_not_empty_blocks_the_cutover(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """create-first copies directly, and the copy refuses a target that already holds data."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", freeze="suspend")
    untouched = app.snapshot()
    emu.faults.seed_new_databases(SEED_EXTRA)  # Render hands out a database that is not empty
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = report_of(result)
    assert report["ok"] is False
    assert "message" in report, result.output
    assert "is not empty (1 objects: table public.injected)" in report["message"]
    assert "failed in phase copy" in report["message"]
    assert_back_on_old(app, untouched, config)
    assert app.api_deploys() == []  # nothing was redeployed: nothing changed


def test_a_mismatch_after_delete_first_says_how_to_restore_and_resumes(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    before = inventory(app.external_url)
    untouched = app.snapshot()
    emu.faults.seed_new_databases(SEED_EXTRA)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 3, result.output
    report = report_of(result)
    backup = report["backup"]["path"]
    new_id = report["new"]["id"]
    message = report["message"]
    assert f"The old database {app.postgres_id} was deleted after a verified backup" in message
    assert f'render-rotator restore "$NEW_DATABASE_URL" {backup}' in message
    assert f"External Database URL of {new_id}" in message
    assert Path(backup).exists()
    # no env var changed (they still name the deleted database)
    assert app.env() == untouched["env"] and app.group_env() == untouched["group"]
    # resume copies again into the emptied database, verifies, and finishes
    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    final = report_of(resumed)
    assert final["new"]["id"] == new_id
    assert_rotated(app, final, before, config=config)


def test_a_database_that_never_becomes_available_times_out_cleanly(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", provision_timeout=1.5)
    untouched = app.snapshot()
    emu.faults.never_available()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "did not become available within 1.5s" in line
    assert "deleted and the old database stays in use" in line
    assert_back_on_old(app, untouched, config)


def test_never_available_after_delete_first_is_resumed(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first", provision_timeout=1)
    before = inventory(app.external_url)
    emu.faults.never_available()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = report_of(result)
    assert "render-rotator resume" in report["message"]
    assert Path(report["backup"]["path"]).exists()
    emu.faults.never_available(False)  # Render catches up
    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert_rotated(app, report_of(resumed), before, config=config)


def test_writes_that_get_past_the_freeze_block_the_cutover(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """freeze = none and a client that keeps writing: the copy would miss its rows, so the
    old database's drift since the backup stops the rotation before anything changes."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", freeze="none")
    untouched = app.snapshot()
    writer = Writer(app.external_url)
    writer.start()
    try:
        wait_for_rows(writer, 10)
        result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    finally:
        writer.stop()
    assert result.exit_code == 3, result.output
    report = report_of(result)
    assert "the old database changed after the backup was taken" in report["message"]
    assert any("old database since the backup: table public.writes" in n for n in report["notes"])
    assert_back_on_old(app, untouched, config)


pytestmark = pytest.mark.usefixtures("no_faults_left")
