"""The guard on every destructive step, on the Render emulator with real PostgreSQL.

A `new_name` that an unrelated database already uses changes nothing (exit 2); an env var
changed by someone else during the rotation is not overwritten; the old database deleted by
someone else mid-rotation leaves the verified new one live (no rollback onto nothing, no
deletion of the only copy); the marker and the lease live beside the user's own comment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator import resume, rotate
from render_rotator.postgres.inventory import compare_inventories
from render_rotator.postgres.stamp import read_stamp
from render_rotator.render import RenderClient
from render_rotator.rotation.observer import LogUI
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.sandbox.seed import create_postgres
from tests.rotation_support import (
    PAID_PLAN,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


@pytest.fixture(autouse=True)
def _no_faults(emu: RenderEmulator) -> Iterator[None]:
    emu.faults.clear()
    yield
    emu.faults.clear()


class OnPhase(LogUI):
    """A UI that does something (as someone else would) when a phase starts."""

    def __init__(self, phase: str, action: Any) -> None:
        self.at, self.action = phase, action

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name == self.at:
            self.action()
        with super().phase(name):
            yield


def _client(emu: RenderEmulator) -> RenderClient:
    return RenderClient(api_key=emu.api_key, base_url=emu.base_url)


def test_new_name_of_an_unrelated_database_is_exit_2_and_changes_nothing(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    # someone's other database already has the name the rotation would give the new one
    other = create_postgres(emu, f"{app.name}-other", app.owner_id, plan=PAID_PLAN)
    other_url = emu.connection_info(other["id"])["externalConnectionString"]
    execute(other_url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
    config = write_config(tmp_path, app, strategy="create-first")
    text = config.read_text().replace(
        "[[database]]\n", f'[[database]]\nnew_name = "{app.name}-other"\n'
    )
    config.write_text(text)
    untouched = app.snapshot()

    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert f"'{app.name}-other' is already used by {other['id']}" in line
    assert "carries no render-rotator marker" in line
    assert "nothing was changed" in line and "set new_name" in line
    assert app.snapshot() == untouched
    assert execute(other_url, "SELECT x FROM precious") == [(42,)]
    assert not journal_file(config, app).exists()


def test_old_database_deleted_by_someone_else_keeps_the_verified_new_one_live(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Between copy and deploy the old database disappears (deleted from the dashboard);
    the deploy fails. Rolling back would point every service at nothing and delete the only
    copy: instead the new database stays, every target on it, and resume finishes."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", freeze="maintenance")
    before = inventory(app.external_url)
    emu.faults.fail_next_deploy(app.service_id, status="update_failed")
    ui = OnPhase("deploy", lambda: emu.delete_postgres(app.postgres_id))
    with _client(emu) as client:
        result = rotate(config, yes=True, client=client, ui=ui)
    [report] = result.reports
    assert report.exit_code == 1 and not report.ok
    assert "the old one is gone, so nothing was rolled back" in report.message
    assert f"the old database {app.postgres_id} was deleted outside this rotation" in (report.notes)
    new_id = report.new["id"] if report.new else None
    assert new_id and [pg["id"] for pg in app.databases()] == [new_id]
    info = emu.connection_info(new_id)
    assert app.env()["DATABASE_URL"] == info["internalConnectionString"]
    assert app.group_env()["DATABASE_URL"] == info["internalConnectionString"]
    assert compare_inventories(before, inventory(info["externalConnectionString"])).equal
    assert journal_file(config, app).exists()  # open, for resume

    emu.faults.clear()
    with _client(emu) as client:
        done = resume(config, client=client)
    [finished] = done.reports
    assert finished.ok and finished.rotated, finished.message
    assert finished.new is not None and finished.new["id"] == new_id
    assert [pg["id"] for pg in app.databases()] == [new_id]
    assert [d["status"] for d in app.api_deploys()][0] == "live"
    assert compare_inventories(before, inventory(info["externalConnectionString"])).equal


def test_a_target_changed_by_someone_else_is_not_overwritten(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    elsewhere = "postgresql://someone:pw@db.example.com:5432/theirs"

    def someone_edits() -> None:
        with _client(emu) as other:
            other.set_env_var(app.service_id, "READ_URL", elsewhere)

    ui = OnPhase("repoint", someone_edits)
    with _client(emu) as client:
        result = rotate(config, yes=True, client=client, ui=ui)
    [report] = result.reports
    assert report.exit_code == 1
    assert "refusing to overwrite" in report.message and "READ_URL" in report.message
    assert app.env()["READ_URL"] == elsewhere  # their value stays
    # landed back on the old database: the other targets point at it, the new one is gone
    assert app.env()["DATABASE_URL"] == app.internal_url
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]


def test_the_new_database_carries_the_marker_and_the_user_comment_survives(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    dbname = execute(app.external_url, "SELECT current_database()")[0][0]
    execute(app.external_url, f"COMMENT ON DATABASE \"{dbname}\" IS 'ours, keep me'")
    config = write_config(tmp_path, app, strategy="create-first", keep_old=True)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    new_url = emu.connection_info(report["new"]["id"])["externalConnectionString"]
    marker = read_stamp(new_url)["marker"]
    assert marker["old_id"] == app.postgres_id
    # the lease is gone from both, and the user's own comment on the old one is intact
    assert "lease" not in read_stamp(new_url)
    assert read_stamp(app.external_url) == {}
    comment = execute(
        app.external_url,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = current_database()",
    )
    assert comment == [("ours, keep me",)]


def test_the_old_database_is_not_deleted_while_a_target_uses_it(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Someone points a service back at the old database after the cutover: retire refuses."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")

    def someone_points_back() -> None:
        with _client(emu) as other:
            other.set_env_var(app.service_id, "READ_URL", app.external_url)

    ui = OnPhase("retire", someone_points_back)
    with _client(emu) as client:
        result = rotate(config, yes=True, client=client, ui=ui)
    [report] = result.reports
    assert report.exit_code == 1
    assert f"refusing to delete the old database {app.postgres_id}" in report.message
    assert f"{app.service_id}:READ_URL point(s) at it right now" in report.message
    assert app.postgres_id in [pg["id"] for pg in app.databases()]


def test_delete_first_keeps_the_old_database_when_it_drifted_after_the_backup(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """A writer the freeze does not stop commits after the backup: the drift check, run right
    before the deletion, keeps the old database (with that row) and exits 3."""
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first", freeze="suspend")
    ui = OnPhase(
        "delete-old",
        lambda: execute(app.external_url, "INSERT INTO writes (note) VALUES ('late')"),
    )
    with _client(emu) as client:
        result = rotate(config, yes=True, client=client, ui=ui)
    [report] = result.reports
    assert report.exit_code == 3, report.message
    assert "changed after the snapshot the copy was taken from, so it was kept" in report.message
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]
    assert execute(app.external_url, "SELECT note FROM writes") == [("late",)]
    assert app.env()["DATABASE_URL"] == app.internal_url
