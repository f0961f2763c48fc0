"""Rotations meeting Render's free-tier facts: the free slot that frees only after a while,
expiry (status, the way out, `rotate --rescue` end to end) and the IP allow list.

All on the emulator with real PostgreSQL, through the CLI users run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from render_rotator.sandbox.emulator import RenderEmulator, expires_in
from tests.rotation_support import (
    PAID_PLAN,
    App,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_faults(emu: RenderEmulator) -> Iterator[None]:
    emu.faults.clear()
    yield
    emu.faults.clear()


def _creates(emu: RenderEmulator) -> list[int]:
    """Statuses of every POST /postgres so far."""
    return [
        status for method, path, status in emu.requests if (method, path) == ("POST", "/postgres")
    ]


# -- the free slot -----------------------------------------------------------------------------


def test_delete_first_waits_for_render_to_free_the_slot(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first", freeze="suspend")
    before = inventory(app.external_url)
    emu.faults.refuse_free_after_delete(n=3)
    emu.clear_requests()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert _creates(emu) == [400, 400, 400, 201]
    assert any("refused the new free database 3 time(s)" in n for n in report["notes"])
    assert_rotated(app, report, before, config=config)


def test_auto_fallback_waits_for_the_slot_too(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="auto")
    before = inventory(app.external_url)
    emu.faults.refuse_free_after_delete(n=2)
    emu.clear_requests()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    # the second free database refused (create-first), then the freed slot refused twice
    assert _creates(emu) == [400, 400, 400, 201]
    assert_rotated(app, report_of(result), before, config=config)


def test_the_wait_ends_at_its_deadline_and_a_later_resume_waits_again(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first", provision_timeout=1)
    before = inventory(app.external_url)
    emu.faults.refuse_free_after_delete(seconds=3600)
    failed = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert failed.exit_code == 1
    message = report_of(failed)["message"]
    assert "Render still refuses a new free database" in message
    assert "render-rotator resume" in message and app.postgres_id in message
    assert [pg["id"] for pg in app.databases()] == []  # the old one was deleted, no new one
    first = json.loads(journal_file(config, app).read_text())["state"]["free_slot_waited"]
    assert first["refusals"] >= 2 and "free_slot_wait" not in first

    # resumed while Render still refuses: a fresh wait (the first one ran out), refused again
    emu.clear_requests()
    again = run_cli(emu, "resume", "-c", str(config), "--json")
    assert again.exit_code == 1
    assert len(_creates(emu)) >= 2 and set(_creates(emu)) == {400}
    second = json.loads(journal_file(config, app).read_text())["state"]["free_slot_waited"]
    assert second["since"] > first["since"]

    emu.faults.clear()  # Render frees the slot
    done = run_cli(emu, "resume", "-c", str(config), "--json")
    assert done.exit_code == 0, done.output
    assert len(app.databases()) == 1
    assert_rotated(app, report_of(done), before, config=config)


def _rotate_and_kill(
    emu: RenderEmulator,
    app: App,
    config: Path,
    when: Callable[[dict[str, Any]], bool],
    *extra: str,
) -> dict[str, Any]:
    """Run `rotate --yes [extra]` in a process and SIGKILL it (and its children) as soon as
    the journal satisfies `when`; returns the journal as it was then."""
    env = {**os.environ, "RENDER_API_URL": emu.base_url, "RENDER_API_KEY": emu.api_key}
    env["PYTHONPATH"] = str(REPO)
    env.pop("GITHUB_ACTIONS", None)
    journal = journal_file(config, app)
    with (config.parent / "killed.log").open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes", *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    data = json.loads(journal.read_text())
                except (FileNotFoundError, ValueError):
                    data = None
                if data and when(data):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    return data
                assert proc.poll() is None, (config.parent / "killed.log").read_text()
                assert time.monotonic() < deadline, "rotate took too long"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_killed_while_waiting_for_the_slot_resumes_into_the_same_wait(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    before = inventory(app.external_url)
    emu.faults.refuse_free_after_delete(n=4)
    at_kill = _rotate_and_kill(emu, app, config, lambda j: bool(j["state"].get("free_slot_wait")))
    assert at_kill["state"]["old_deleted"] is True and "new_id" not in at_kill["state"]
    waiting = at_kill["state"]["free_slot_wait"]
    result = run_cli(emu, "resume", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    # one wait across both runs (same start, its refusals add up), exactly one new database
    assert any("refused the new free database 4 time(s)" in n for n in report["notes"]), (
        waiting,
        report["notes"],
    )
    archived = json.loads(Path(report["journal"]).read_text())
    assert archived["state"]["free_slot_waited"]["since"] == waiting["since"]
    assert len(app.databases()) == 1
    assert_rotated(app, report, before, config=config)


# -- expiry ------------------------------------------------------------------------------------


def _status(emu: RenderEmulator, config: Path) -> list[dict[str, Any]]:
    result = run_cli(emu, "status", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    return report_of(result)["databases"]


def test_without_expires_at_status_and_the_due_check_count_30_days_from_creation(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, rows=10)
    config = write_config(tmp_path, app)
    created = datetime.now(UTC) - timedelta(days=25)
    emu.set_expires_at(app.postgres_id, None)
    emu.set_created_at(app.postgres_id, created)
    [entry] = _status(emu, config)
    assert entry["expires_at"] == (created + timedelta(days=30)).isoformat()
    assert entry["days_left"] == pytest.approx(5, abs=0.1)
    assert entry["due"] is True and entry["expired"] is False
    noop = run_cli(emu, "rotate", "-c", str(config), "--if-expiring-within", "3", "--json")
    assert noop.exit_code == 0 and report_of(noop)["due"] is False
    assert "expires in 5.0 days" in report_of(noop)["message"]


def test_an_expired_database_shows_its_deletion_date_and_rotate_explains_the_way_out(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, rows=10)
    config = write_config(tmp_path, app)
    expired_at = datetime.now(UTC) - timedelta(days=2)
    emu.set_expires_at(app.postgres_id, expired_at)
    deleted_at = expired_at + timedelta(days=14)

    [entry] = _status(emu, config)
    assert entry["status"] == "expired" and entry["render_status"] == "suspended"
    assert entry["expired"] is True and entry["days_left"] == pytest.approx(-2, abs=0.1)
    assert entry["deleted_at"][:16] == deleted_at.isoformat()[:16]
    human = run_cli(emu, "status", "-c", str(config))
    assert human.exit_code == 0
    [row] = [line for line in human.output.splitlines() if app.postgres_id in line]
    assert " expired " in row
    assert f"Render deletes it on {deleted_at:%Y-%m-%d}" in row and "rotate --rescue" in row

    # a backup taken earlier is offered as the other way out
    backups = tmp_path / "backups"
    backups.mkdir()
    old_backup = backups / f"{app.name}-{app.postgres_id}-20250101T000000Z.dump"
    old_backup.write_bytes(b"archive")
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert f"expired on {expired_at:%Y-%m-%d}" in line
    assert f"Render deletes it on {deleted_at:%Y-%m-%d}" in line
    assert "rotate --rescue" in line and "basic_256mb" in line
    assert str(old_backup) in line
    assert app.snapshot() == untouched
    assert not journal_file(config, app).exists()
    # the daily scheduled run says the same, as a failure (it is past due)
    daily = run_cli(emu, "rotate", "-c", str(config), "--if-expiring-within", "--yes")
    assert daily.exit_code == 1 and "rotate --rescue" in error_lines(daily)[0]


@pytest.mark.parametrize("plan", ["free", PAID_PLAN])
def test_rescue_only_permits_an_upgrade_a_database_that_has_not_expired_rotates_as_usual(
    emu: RenderEmulator, tmp_path: Path, plan: str
) -> None:
    app = make_app(emu, plan=plan, rows=10)
    config = write_config(tmp_path, app)
    emu.clear_requests()
    result = run_cli(emu, "rotate", "-c", str(config), "--rescue", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert not any(step.startswith("UPGRADE") for step in report["plan"])
    # a paid database on the rescue plan is not moved to the free plan by --rescue alone
    assert any(f"(plan {plan}," in step for step in report["plan"]), report["plan"]
    assert any("--rescue had nothing to rescue" in n for n in report["notes"])
    assert not [r for r in emu.requests if r[0] != "GET"]


def test_rescue_upgrades_an_expired_database_and_rotates_it_into_a_new_free_one(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, freeze="suspend")
    before = inventory(app.external_url)
    emu.set_expires_at(app.postgres_id, expires_in(-3))
    assert emu.postgres(app.postgres_id)["status"] == "suspended"

    plan = run_cli(emu, "rotate", "-c", str(config), "--rescue", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    steps = report_of(plan)["plan"]
    assert any(s.startswith(f"UPGRADE {app.postgres_id} to basic_256mb") for s in steps)
    assert any("plan free" in s for s in steps)
    assert emu.postgres(app.postgres_id)["plan"] == "free"  # the dry run changed nothing

    # it costs money: without --yes (and no terminal to ask on) nothing happens
    refused = run_cli(emu, "rotate", "-c", str(config), "--rescue")
    assert refused.exit_code == 2 and "not confirmed" in error_lines(refused)[0]
    assert emu.postgres(app.postgres_id)["plan"] == "free"

    emu.clear_requests()
    result = run_cli(emu, "rotate", "-c", str(config), "--rescue", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert ("PATCH", f"/postgres/{app.postgres_id}", 200) in emu.requests
    statuses = {p["name"]: p["status"] for p in report["phases"]}
    assert statuses["upgrade"] == "done" and statuses["retire"] == "done"
    assert report["strategy"] == "create-first"
    # data intact, new FREE database live with 30 days, paid one deleted, targets repointed
    info = assert_rotated(app, report, before, config=config)
    new = emu.postgres(report["new"]["id"])
    assert new["plan"] == "free" and "expiresAt" in new
    assert app.postgres_id not in emu.postgres_ids()
    execute(info["externalConnectionString"], "INSERT INTO writes (note) VALUES ('rescued')")


@pytest.mark.parametrize("phase", ["upgrade", "provision"])
def test_a_rescue_killed_after_a_phase_resumes_into_a_free_database(
    emu: RenderEmulator, tmp_path: Path, phase: str
) -> None:
    app = make_app(emu, rows=50)
    config = write_config(tmp_path, app)
    before = inventory(app.external_url)
    emu.set_expires_at(app.postgres_id, expires_in(-1))
    emu.clear_requests()
    at_kill = _rotate_and_kill(
        emu,
        app,
        config,
        lambda j: j["phases"].get(phase, {}).get("status") == "done",
        "--rescue",
    )
    assert at_kill["state"]["rescue"]["upgraded"] is True
    result = run_cli(emu, "resume", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert [r for r in emu.requests if r[0] == "PATCH"] == [
        ("PATCH", f"/postgres/{app.postgres_id}", 200)
    ]  # upgraded once, by the killed run
    assert emu.postgres(report["new"]["id"])["plan"] == "free"
    # the report still says when the old one had expired (its upgrade cleared expiresAt)
    expired = datetime.fromisoformat(report["old"]["expires_at"])
    assert expired < datetime.now(UTC) - timedelta(hours=23)
    assert_rotated(app, report, before, config=config)


def test_rescue_that_fails_after_the_upgrade_lands_on_the_readable_paid_database(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, rows=20)
    config = write_config(tmp_path, app, freeze="suspend")
    before = inventory(app.external_url)
    emu.set_expires_at(app.postgres_id, expires_in(-1))
    emu.faults.fail_next_deploy(app.service_id)
    failed = run_cli(emu, "rotate", "-c", str(config), "--rescue", "--yes", "--json")
    assert failed.exit_code == 1
    message = report_of(failed)["message"]
    assert "paid plan basic_256mb" in message and "rotate --rescue" in message
    old = emu.postgres(app.postgres_id)
    assert old["plan"] == "basic_256mb" and old["status"] == "available"
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]
    marker = tmp_path / "state" / f"{app.name}.rescue.json"
    assert json.loads(marker.read_text())["postgres_id"] == app.postgres_id
    # without --rescue it is an ordinary paid database: its rotation would stay paid
    plain = run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json")
    assert any("(plan basic_256mb," in step for step in report_of(plain)["plan"])
    # run again with --rescue: the upgrade is done, it finishes the move into a free database
    emu.clear_requests()
    again = run_cli(emu, "rotate", "-c", str(config), "--rescue", "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert not [r for r in emu.requests if r[0] == "PATCH"]
    report = report_of(again)
    assert emu.postgres(report["new"]["id"])["plan"] == "free"
    assert not marker.exists()
    # the failed run's deploys went live on the old database: one per run
    assert [d["status"] for d in app.api_deploys()][:1] == ["live"]
    assert app.postgres_id not in emu.postgres_ids()
    assert inventory(emu.connection_info(report["new"]["id"])["externalConnectionString"]) == before


# -- the IP allow list -------------------------------------------------------------------------


def test_the_allow_list_is_copied_exactly(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN, rows=20)
    allow = [
        {"cidrBlock": "127.0.0.1/32", "description": "this machine"},
        {"cidrBlock": "203.0.113.0/24", "description": "office"},
    ]
    with _api(emu) as api:
        assert api.patch(f"/postgres/{app.postgres_id}", json={"ipAllowList": allow}).is_success
    config = write_config(tmp_path, app, strategy="create-first")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert emu.postgres(report_of(result)["new"]["id"])["ipAllowList"] == allow


def test_a_database_shut_out_by_its_allow_list_says_so(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN, rows=20)
    config = write_config(tmp_path, app, strategy="create-first", connect_timeout=2)
    for allow, words in (
        ([], "its IP allow list is empty, which admits no connection from outside Render"),
        (
            [{"cidrBlock": "203.0.113.0/24", "description": "office"}],
            "its IP allow list (203.0.113.0/24) may not include this machine's address",
        ),
    ):
        with _api(emu) as api:
            patched = api.patch(f"/postgres/{app.postgres_id}", json={"ipAllowList": allow})
            assert patched.is_success
        untouched = app.snapshot()
        result = run_cli(emu, "rotate", "-c", str(config), "--yes")
        assert result.exit_code == 1
        [line] = error_lines(result)
        assert words in line and app.postgres_id in line
        assert "add this machine's public IP" in line and "GitHub Actions" in line
        assert app.snapshot() == untouched


def test_an_open_database_that_cannot_be_reached_does_not_blame_the_allow_list(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN, rows=5)
    config = write_config(tmp_path, app, strategy="create-first", connect_timeout=2)
    with _api(emu) as api:
        assert api.post(f"/postgres/{app.postgres_id}/suspend").status_code == 202
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert "allow list" not in line and "cannot connect" in line
    with _api(emu) as api:
        assert api.post(f"/postgres/{app.postgres_id}/resume").status_code == 202


def _api(emu: RenderEmulator) -> httpx.Client:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    return httpx.Client(base_url=emu.base_url, headers=headers, timeout=10)
