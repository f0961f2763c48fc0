"""A delete-first rotation SIGKILLed after it deleted the old database, on a machine that
then loses its journal (a fresh CI runner): `rotate` or `resume` finishes it from what Render
shows plus the backup (in backup_dir, or given with --backup); without the backup it says what
exists and what to do, and changes nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator.postgres.inventory import compare_inventories
from render_rotator.render import RenderClient
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.sandbox.seed import create_postgres
from tests.rotation_support import (
    DONE,
    App,
    assert_rotated,
    error_lines,
    inventory,
    make_app,
    report_of,
    rotate_and_kill,
    run_cli,
    write_config,
)


@pytest.fixture(autouse=True)
def _slow_api(emu: RenderEmulator) -> Iterator[None]:
    # as in test_rotation_resume: the kill lands close to the phase boundary
    emu.faults.clear()
    emu.faults.latency(0.01)
    yield
    emu.faults.clear()


def _killed_after(
    emu: RenderEmulator, tmp_path: Path, phase: str
) -> tuple[App, Path, dict[str, Any]]:
    """A free app whose delete-first rotation was killed once `phase` was done, and whose
    journal was then lost with the machine."""
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="delete-first")
    at_kill = rotate_and_kill(emu, app, config, phase, DONE)
    assert at_kill["state"]["old_deleted"] is True
    assert emu.state_snapshot()["postgres"].get(app.postgres_id) is None
    shutil.rmtree(tmp_path / "state")
    return app, config, at_kill


def _backup_files(tmp_path: Path) -> list[Path]:
    """The archive and its manifest (not the hidden lease a run killed between the deletion
    and the new database leaves beside them)."""
    return sorted(p for p in (tmp_path / "backups").iterdir() if not p.name.endswith(".lease"))


@pytest.mark.parametrize(
    ("phase", "command"),
    [
        ("delete-old", ["rotate", "--yes"]),
        ("delete-old", ["resume"]),
        ("provision", ["rotate"]),  # nothing left to delete: no confirmation needed
        ("copy", ["resume"]),
    ],
    ids=["rotate-after-delete-old", "resume-after-delete-old", "after-provision", "after-copy"],
)
def test_a_fresh_machine_finishes_from_the_backup_in_backup_dir(
    emu: RenderEmulator, tmp_path: Path, phase: str, command: list[str]
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    at_kill = rotate_and_kill(emu, app, config, phase, DONE)
    shutil.rmtree(tmp_path / "state")
    assert emu.service(app.service_id)["suspended"] == "suspended"  # frozen by the dead run
    made = at_kill["state"].get("new_id")

    result = run_cli(emu, command[0], "-c", str(config), *command[1:], "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    assert report["strategy"] == "delete-first"
    [note] = [n for n in report["notes"] if "interrupted delete-first rotation" in n]
    assert app.postgres_id in note and "sha256 checked" in note
    if made:  # the database that run created was finished, not a second one created
        assert report["new"]["id"] == made
        assert f"into {made}" in note
    again = run_cli(emu, "resume", "-c", str(config), "--json")
    assert again.exit_code == 0 and report_of(again)["message"].startswith("nothing to resume")


@pytest.mark.parametrize("give", ["archive", "manifest", "directory"])
def test_the_backup_moved_elsewhere_is_given_with_backup_path(
    emu: RenderEmulator, tmp_path: Path, give: str
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    rotate_and_kill(emu, app, config, "delete-old", DONE)
    shutil.rmtree(tmp_path / "state")
    download = tmp_path / "artifact" / "rotation-backup"
    download.parent.mkdir()
    shutil.move(tmp_path / "backups", download)  # as an Actions artifact downloads
    # (a run killed between the deletion and the new database also leaves its hidden lease)
    [archive] = [p for p in download.iterdir() if not p.name.endswith((".json", ".lease"))]
    manifest = archive.with_name(archive.name + ".json")
    given = {"archive": archive, "manifest": manifest, "directory": download.parent}[give]

    # without --backup: backup_dir is empty, so the clear error, and nothing changed
    snapshot = emu.state_snapshot()
    missing = run_cli(emu, "resume", "-c", str(config))
    assert missing.exit_code != 0
    assert emu.state_snapshot() == snapshot

    result = run_cli(emu, "resume", "-c", str(config), "--backup", str(given), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    assert report["backup"]["path"] == str(archive.resolve())


def test_without_any_backup_it_says_what_exists_and_changes_nothing(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app, config, _ = _killed_after(emu, tmp_path, "delete-old")
    shutil.rmtree(tmp_path / "backups")
    other = make_app(emu, plan="free")  # another workspace's database is not listed
    snapshot = emu.state_snapshot()

    for command in (["rotate", "--yes"], ["resume"]):
        result = run_cli(emu, command[0], "-c", str(config), *command[1:])
        assert result.exit_code == 1, result.output
        [line] = error_lines(result)
        assert f"the database of {app.name} is gone from Render" in line
        # which targets hold what (never a password), which databases exist, where it looked
        for label in (f"{app.service_id}:DATABASE_URL", f"{app.env_group_id}:DATABASE_URL"):
            assert label in line
        assert f"Render databases of {app.owner_id}: none" in line
        assert other.postgres_id not in line
        assert str((tmp_path / "backups").resolve()) in line
        assert "--backup PATH" in line and "cannot be recovered" in line
        assert app.password not in result.output and emu.api_key not in result.output
        assert emu.state_snapshot() == snapshot
    assert not list((tmp_path / "state").glob("*.journal.json"))


def test_a_damaged_backup_is_refused_and_nothing_changes(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app, config, _ = _killed_after(emu, tmp_path, "delete-old")
    [archive] = [p for p in _backup_files(tmp_path) if not p.name.endswith(".json")]
    data = sorted(p for p in archive.rglob("*") if p.is_file())[-1]
    data.write_bytes(data.read_bytes() + b"\0")
    snapshot = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "does not match its manifest's sha256" in line and "nothing was changed" in line
    assert emu.state_snapshot() == snapshot


def test_a_backup_of_another_database_is_refused(emu: RenderEmulator, tmp_path: Path) -> None:
    app, config, _ = _killed_after(emu, tmp_path, "delete-old")
    _, other_config, _ = _killed_after(emu, tmp_path / "other", "delete-old")
    shutil.rmtree(tmp_path / "backups")
    snapshot = emu.state_snapshot()
    result = run_cli(
        emu, "resume", "-c", str(config), "--backup", str(other_config.parent / "backups")
    )
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "is not a backup of the lost database" in line and app.name in line
    assert emu.state_snapshot() == snapshot


def test_a_database_this_rotation_did_not_create_is_never_adopted(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """A database named like a rotation of the lost one but made before the backup (by
    someone else) is left alone: the rotation provisions its own (a paid plan here, so
    Render allows two)."""
    app = make_app(emu, plan="basic_256mb")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    rotate_and_kill(emu, app, config, "delete-old", DONE)
    shutil.rmtree(tmp_path / "state")
    # named like a rotation of it, carrying no marker of one (a run that saw it first would
    # refuse to touch it, so it appears once the old database is gone)
    stranger = create_postgres(emu, f"{app.name}-20200101", app.owner_id, plan="basic_256mb")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"]["id"] != stranger["id"]
    assert emu.postgres(stranger["id"])["status"] == "available"
    new = emu.connection_info(report["new"]["id"])
    assert app.env()["DATABASE_URL"] == new["internalConnectionString"]
    assert compare_inventories(before, inventory(new["externalConnectionString"])).equal


def test_a_repoint_cut_short_keeps_the_new_database_in_use(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Killed between two targets of the repoint, journal lost: the new database a target
    already uses is checked against the backup and never emptied; the rest are repointed."""
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    at_kill = rotate_and_kill(emu, app, config, "verify", DONE)
    new_id = at_kill["state"]["new_id"]
    internal = emu.connection_info(new_id)["internalConnectionString"]
    emu.faults.clear()
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        client.set_env_var(app.service_id, "DATABASE_URL", internal)
    shutil.rmtree(tmp_path / "state")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"]["id"] == new_id
    assert_rotated(app, report, before, config=config)


def test_a_manifest_names_the_targets_by_fingerprint_only(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app, _, _ = _killed_after(emu, tmp_path, "delete-old")
    [manifest] = [p for p in _backup_files(tmp_path) if p.name.endswith(".json")]
    data = json.loads(manifest.read_text())
    assert data["owner_id"] == app.owner_id
    assert data["spec"]["plan"] == "free" and data["spec"]["database_user"]
    assert sorted(data["targets"]) == sorted(
        [
            f"{app.service_id}:DATABASE_URL",
            f"{app.service_id}:READ_URL",
            f"{app.env_group_id}:DATABASE_URL",
        ]
    )
    assert app.password not in manifest.read_text()


def test_resume_with_the_journal_takes_a_moved_backup_with_backup_path(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The journal survived but the backup it names was moved: `resume` says so and keeps
    the journal; `resume --backup` with that same archive finishes; another archive is
    refused before anything happens."""
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    rotate_and_kill(emu, app, config, "delete-old", DONE)
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "backups", moved)
    [archive] = [p for p in moved.iterdir() if not p.name.endswith((".json", ".lease"))]

    snapshot = emu.state_snapshot()
    stuck = run_cli(emu, "resume", "-c", str(config))
    assert stuck.exit_code == 1, stuck.output
    [line] = error_lines(stuck)
    assert "that backup is no longer at" in line and "nothing was changed" in line
    assert "resume --backup PATH" in line
    assert emu.state_snapshot() == snapshot  # no database provisioned that could not be filled

    _killed_after(emu, tmp_path / "other", "delete-old")
    wrong = run_cli(
        emu, "resume", "-c", str(config), "--backup", str(tmp_path / "other" / "backups")
    )
    assert wrong.exit_code == 2, wrong.output
    [line] = error_lines(wrong)
    assert "is not the backup this rotation took" in line

    result = run_cli(emu, "resume", "-c", str(config), "--backup", str(archive), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    assert report["backup"]["path"] == str(archive.resolve())


def test_dry_run_shows_the_recovery_and_changes_nothing(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app, config, _ = _killed_after(emu, tmp_path, "delete-old")
    snapshot = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = report_of(result)["plan"]
    assert any(f"{app.postgres_id} is already deleted" in step for step in plan), plan
    assert not any(step.startswith("DELETE") for step in plan), plan
    assert emu.state_snapshot() == snapshot
    assert not list((tmp_path / "state").glob("*.journal.json"))


def _manifest(tmp_path: Path, **extra: Any) -> Path:
    data = {
        "database": "app-db",
        "postgres_id": "dpg-old-a",
        "created_at": "20261201T101010Z",
        "archive": {
            "sha256": "0" * 64,
            "format": "custom",
            "source": "postgresql://app_user:***@dpg-old-a.frankfurt-postgres.render.com:5432/app",
            "inventory": {"server_version": 160004, "tables": {}},
        },
        **extra,
    }
    path = tmp_path / "app-db-dpg-old-a-20261201T101010Z.dump.json"
    path.write_text(json.dumps(data))
    return path


def test_a_manifest_without_a_spec_gives_one_from_its_source_url(tmp_path: Path) -> None:
    from render_rotator.rotation.recovery import _load, spec_of

    backup = _load(_manifest(tmp_path))
    assert backup is not None
    assert backup.archive == tmp_path / "app-db-dpg-old-a-20261201T101010Z.dump"
    spec = spec_of(backup)
    assert (spec.region, spec.version, spec.plan) == ("frankfurt", "16", "free")
    assert (spec.database_name, spec.database_user) == ("app", "app_user")


def test_a_manifest_without_a_spec_or_a_render_host_is_refused(tmp_path: Path) -> None:
    from render_rotator.errors import RotationError
    from render_rotator.rotation.recovery import _load, spec_of

    path = _manifest(tmp_path)
    data = json.loads(path.read_text())
    data["archive"]["source"] = "postgresql://app_user:***@127.0.0.1:5432/app"
    path.write_text(json.dumps(data))
    backup = _load(path)
    assert backup is not None
    with pytest.raises(RotationError, match="does not say how to recreate app-db"):
        spec_of(backup)


def test_one_target_on_an_unknown_database_is_a_misconfiguration_not_a_loss(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The old database exists and the other targets use it: a target holding some other
    URL is reported as before (exit 2), not taken for a lost database."""
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="delete-first")
    emu.faults.clear()
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        client.set_env_var(
            app.service_id, "READ_URL", "postgresql://u:pw@dpg-gone-a.oregon-postgres.render.com/x"
        )
    snapshot = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert f"target {app.service_id}:READ_URL does not point at {app.name}" in line
    assert "gone from Render" not in line
    assert emu.state_snapshot() == snapshot


def test_killed_after_the_repoint_the_deploy_and_thaw_are_finished(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """Every target already uses the new database and the services are still frozen: the
    fresh machine checks that database against the backup and deploys, rather than rotating
    it again (or, with --if-expiring-within, leaving the services suspended)."""
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    at_kill = rotate_and_kill(emu, app, config, "repoint", DONE)
    shutil.rmtree(tmp_path / "state")
    assert emu.service(app.service_id)["suspended"] == "suspended"
    result = run_cli(emu, "rotate", "-c", str(config), "--if-expiring-within", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"] is not None, result.output
    assert report["new"]["id"] == at_kill["state"]["new_id"]
    assert any("every target already uses its replacement" in n for n in report["notes"])
    assert_rotated(app, report, before, config=config)


def test_a_finished_rotation_with_its_backup_around_is_rotated_as_usual(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The backup of the database a finished rotation deleted stays in backup_dir; the
    services run: the next rotation rotates the database in use (nothing to finish)."""
    app = make_app(emu, plan="basic_256mb")
    config = write_config(tmp_path, app, strategy="delete-first")
    first = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert first.exit_code == 0, first.output
    in_use = report_of(first)["new"]["id"]
    shutil.rmtree(tmp_path / "state")
    plan = report_of(run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json"))["plan"]
    assert plan[0].startswith(f"inspect {in_use}"), plan
    assert any(step.startswith(f"DELETE {in_use}") for step in plan), plan
