"""The typed rotation state: journal format 2, journals of the previous version, decisions.

`tests/data/journal-v1.json` was written by the previous version (journal version 1) of a
delete-first rotation killed inside provision, after the old database was deleted.
`tests/data/journal-v2-after-backup.json` and `journal-v2-after-deploy.json` were written by
version 2 before its last plain-dict fields were typed: rotations killed (SIGKILL) after the
backup phase (delete-first) and after the deploy phase (create-first).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from render_rotator.errors import RotationError
from render_rotator.rotation.journal import JOURNAL_VERSION, Journal
from render_rotator.rotation.state import (
    BackupFacts,
    CopySummary,
    CreateRequest,
    DatabaseSpec,
    Decision,
    DeployRecord,
    FrozenServices,
    PhaseState,
    RotationState,
    TargetState,
    VerificationSummary,
)
from tests.rotation_support import (
    assert_rotated,
    error_lines,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

DATA = Path(__file__).parent / "data"
V1 = DATA / "journal-v1.json"
V2_AFTER_BACKUP = DATA / "journal-v2-after-backup.json"
V2_AFTER_DEPLOY = DATA / "journal-v2-after-deploy.json"


def _v1(tmp_path: Path, **state: Any) -> Path:
    data = json.loads(V1.read_text())
    data["state"].update(state)
    path = tmp_path / "state" / f"{data['database']}.journal.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_previous_version_journal_loads_into_the_typed_state(tmp_path: Path) -> None:
    path = _v1(tmp_path)
    original = json.loads(path.read_text())
    journal = Journal.load(path)
    state = journal.state
    assert isinstance(state.old_spec, DatabaseSpec) and state.old_spec.plan == "free"
    assert state.old_spec.ip_allow_list == [{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}]
    assert isinstance(state.backup, BackupFacts) and state.backup.format == "directory"
    assert state.backup.sha256 == original["state"]["backup"]["sha256"]
    assert all(isinstance(t, TargetState) for t in state.targets.values())
    assert [t.old_kind for t in state.targets.values()] == ["internal", "external", "internal"]
    assert state.old_deleted is True and state.strategy == "delete-first"
    assert state.new_id == original["state"]["new_id"] and state.created_ids == [state.new_id]
    assert state.facts.drift is not None and state.facts.drift.unchanged is True
    assert journal.phases["provision"] == PhaseState(
        status="started", started_at=journal.phases["provision"].started_at, attempts=1, seq=6
    )
    assert journal.is_done("delete-old") and not journal.is_done("provision")
    assert journal.describe() == "last completed phase: delete-old, interrupted in: provision"

    journal.save()  # from now on in this version's format, nothing lost
    saved = json.loads(path.read_text())
    assert saved["version"] == JOURNAL_VERSION == 2
    assert set(saved["state"]) == set(original["state"])
    assert saved["state"]["fingerprint"] == original["state"]["fingerprint"]
    assert saved["state"]["frozen"] == original["state"]["frozen"]
    again = Journal.load(path)
    assert again == journal and again.state == journal.state


def _copy(tmp_path: Path, sample: Path) -> Path:
    path = tmp_path / "state" / sample.name
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, path)
    return path


@pytest.mark.parametrize("sample", [V2_AFTER_BACKUP, V2_AFTER_DEPLOY], ids=lambda p: p.stem)
def test_a_version_2_journal_loads_typed_and_saves_back_unchanged(
    tmp_path: Path, sample: Path
) -> None:
    path = _copy(tmp_path, sample)
    journal = Journal.load(path)
    frozen = journal.state.frozen
    assert isinstance(frozen, FrozenServices) and frozen.mode == "suspend"
    assert frozen.suspended == journal.state.services and frozen.in_window
    journal.save()
    assert json.loads(path.read_text()) == json.loads(sample.read_text())  # key for key


def test_a_version_2_journal_after_backup_is_where_it_stopped(tmp_path: Path) -> None:
    journal = Journal.load(_copy(tmp_path, V2_AFTER_BACKUP))
    state = journal.state
    assert journal.last_phase() == "backup" and journal.interrupted_phase() is None
    assert state.strategy == "delete-first" and state.new_id is None and state.creating is None
    assert state.frozen is not None and state.frozen.pending == state.frozen.suspended
    assert state.frozen.ended_at is None and not state.frozen.fenced
    assert state.deploys == {} and state.copy is None and state.facts.copy is None


def test_a_version_2_journal_after_deploy_keeps_its_records(tmp_path: Path) -> None:
    journal = Journal.load(_copy(tmp_path, V2_AFTER_DEPLOY))
    state = journal.state
    assert journal.last_phase() == "deploy"
    assert isinstance(state.creating, CreateRequest) and state.creating.name == state.new_name
    [(service, record)] = state.deploys.items()
    assert service in (state.services or []) and isinstance(record, DeployRecord)
    assert record.status == "live" and record.deploy_id and record.requested_at
    assert state.frozen is not None and state.frozen.fenced and state.frozen.ended_at
    assert state.frozen.thawed == state.frozen.suspended
    assert isinstance(state.copy, CopySummary) and state.copy.skipped == []
    assert isinstance(state.verification, VerificationSummary)
    assert state.verification.rows == state.rows_copied == 200
    assert state.facts.copy is not None and state.facts.copy.new_id == state.new_id
    assert state.facts.drift is None


@pytest.mark.parametrize(
    ("record", "change", "named"),
    [
        ("frozen", {"mode": "suspend", "melted": True}, "frozen has unknown key(s) melted"),
        ("frozen", {"mode": "suspend", "suspended": "srv-x"}, "frozen.suspended is not a"),
        ("frozen", {"mode": "suspend", "fenced": "yes"}, "frozen.fenced is not a"),
        ("creating", {"name": "x", "requested_at": True}, "creating.requested_at is not a"),
        ("deploys", {"srv-x": {"deploy_id": "d", "log": "x"}}, "deploy of srv-x has unknown"),
        ("deploys", ["srv-x"], "deploys is not an object"),
        ("creating", {"name": "x"}, "creating lacks requested_at"),
        ("copy", {"skipped": []}, "copy lacks method"),
        ("facts", {"copy": {"new_id": "x"}}, "facts.copy lacks at, method"),
        ("facts", {"lease": {}}, "facts has unknown key(s) lease"),
        ("verification", "ok", "verification is not an object"),
        ("rescue", {"plan": "free", "upgrade_to": "basic", "paid": 1}, "rescue has unknown"),
        ("free_slot_wait", {"refusals": 2}, "free_slot_wait lacks since"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_by_name(
    tmp_path: Path, record: str, change: Any, named: str
) -> None:
    path = _copy(tmp_path, V2_AFTER_DEPLOY)
    data = json.loads(path.read_text())
    data["state"][record] = change
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(RotationError) as info:
        Journal.load(path)
    assert named in str(info.value) and "rotate --restart" in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"state": {"lease_token": "x"}}, "unknown key(s) lease_token"),
        ({"state": {"targets": {"srv:KEY": {"value": "x"}}}}, "target srv:KEY has unknown key"),
        ({"phases": {"copy": {"status": "halfway"}}}, "unknown status 'halfway'"),
        ({"state": {"old_spec": {"name": "x"}}}, "old_spec"),
        ({"version": 3}, "has version 3"),
    ],
)
def test_a_journal_this_version_cannot_read_is_refused_with_what_to_do(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    path = _v1(tmp_path)
    data = json.loads(path.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(RotationError) as info:
        Journal.load(path)
    line = str(info.value)
    assert named in line and "\n" not in line
    assert "finish that rotation with the render-rotator version that started it" in line
    assert "rotate --restart" in line
    assert path.read_bytes() == before  # refused, not rewritten


def test_the_state_saves_only_what_is_known_and_reads_back_equal() -> None:
    state = RotationState(old_id="dpg-1", strategy="create-first")
    assert state.to_dict() == {"old_id": "dpg-1", "strategy": "create-first"}
    state.verified = False  # a failed proof is kept, not dropped as an empty default
    state.services = []  # "no services" is known, unlike "not looked up yet" (None)
    state.targets["srv:K"] = TargetState()
    state.decide(Decision(kind="redo", phase="inspect", at="t", reason="r", phases=["copy"]))
    data = state.to_dict()
    assert data["verified"] is False and data["services"] == []
    assert data["targets"] == {"srv:K": {"repointed": False}}
    assert RotationState.from_dict(json.loads(json.dumps(data))) == state
    assert [d.phases for d in RotationState.from_dict(data).pending] == [["copy"]]


# -- end to end: a journal of the previous version resumed by this one ---------------------


def test_a_rotation_interrupted_under_the_previous_format_is_resumed(
    emu: Any, tmp_path: Path
) -> None:
    """Killed after the backup of a delete-first rotation; the journal as the previous version
    wrote it (version 1, no decisions); `resume` of this version finishes the rotation."""
    from tests.rotation_support import rotate_and_kill

    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    at_kill = rotate_and_kill(emu, app, config, "backup", ("done",))
    path = journal_file(config, app)
    data = json.loads(path.read_text())
    data["version"] = 1
    data["state"].pop("decisions", None)
    # version 1 wrote every phase entry with its seconds and started_at
    assert set(data["state"]) <= set(json.loads(V1.read_text())["state"]) | {"deploys"}
    path.write_text(json.dumps(data))

    result = run_cli(emu, "resume", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    assert at_kill["state"]["old_id"] == app.postgres_id
    statuses = {p["name"]: p["status"] for p in report["phases"]}
    assert statuses["backup"] == "done" and statuses["delete-old"] == "done"


def test_an_unreadable_previous_journal_stops_resume_with_one_line(
    emu: Any, tmp_path: Path
) -> None:
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app)
    path = journal_file(config, app)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(V1.read_text())
    data["database"] = app.name
    data["state"]["mystery"] = True
    path.write_text(json.dumps(data))
    before, ids = path.read_bytes(), emu.postgres_ids()
    for args in (["resume"], ["rotate", "--yes"]):
        result = run_cli(emu, *args, "-c", str(config))
        assert result.exit_code != 0, result.output
        [line] = error_lines(result)
        assert "unknown key(s) mystery" in line and "rotate --restart" in line, line
        assert path.read_bytes() == before
    assert emu.postgres_ids() == ids  # nothing changed on Render


def test_rotate_restart_discards_a_journal_this_version_cannot_read(
    emu: Any, tmp_path: Path
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app)
    path = journal_file(config, app)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(V1, path)
    data = json.loads(path.read_text())
    data["database"] = app.name
    data["version"] = 7
    path.write_text(json.dumps(data))
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--restart", "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)
    [kept] = path.parent.glob(f"{path.name.removesuffix('.json')}.unreadable.*.json")
    assert json.loads(kept.read_text())["version"] == 7  # set aside as it was, not deleted


def test_rotate_restart_with_several_databases_sets_an_unreadable_journal_aside(
    emu: Any, tmp_path: Path
) -> None:
    """With two [[database]] entries the pre-flight inspects both before either rotates; an
    unreadable journal of the second is set aside as with one database, not refused."""
    first, second = make_app(emu, plan="free"), make_app(emu, plan="free")
    before = {app.name: inventory(app.external_url) for app in (first, second)}
    config = write_config(tmp_path, first, strategy="delete-first")
    text = config.read_text().replace(f'owner_id = "{first.owner_id}"\n', "")
    text += f'\n[[database]]\nname = "{second.name}"\n'
    for key, connection in (("DATABASE_URL", "internal"), ("READ_URL", "external")):
        text += f'\n  [[database.target]]\n  service = "{second.service_id}"\n'
        text += f'  key = "{key}"\n  connection = "{connection}"\n'
    text += f'\n  [[database.target]]\n  env_group = "{second.env_group_id}"\n'
    text += '  key = "DATABASE_URL"\n'
    config.write_text(text)
    path = journal_file(config, second)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(V2_AFTER_BACKUP.read_text())
    data["database"] = second.name
    data["state"]["frozen"]["melted"] = True  # a key this version does not know
    path.write_text(json.dumps(data))

    refused = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert refused.exit_code != 0 and "frozen has unknown key(s) melted" in refused.output
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--restart", "--json")
    assert result.exit_code == 0, result.output
    reports = {r["database"]: r for r in report_of(result)["databases"]}
    for app in (first, second):
        assert_rotated(app, reports[app.name], before[app.name], config=config)
    [kept] = path.parent.glob(f"{path.name.removesuffix('.json')}.unreadable.*.json")
    assert json.loads(kept.read_text())["state"]["frozen"]["melted"] is True  # kept as it was


# -- decisions recorded but not acted on (a run killed in between) -------------------------


def test_a_decision_recorded_before_a_crash_is_acted_on_when_resumed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from render_rotator.rotation.report import RotationReport
    from render_rotator.rotation.workflow import _apply_decisions

    journal = Journal(path=tmp_path / "db.journal.json", database="db")
    journal.state.strategy = "create-first"
    for name, status in (("delete-old", "skipped"), ("provision", "deferred"), ("copy", "done")):
        journal.phases[name] = PhaseState(status=status, attempts=1)
    journal.state.decide(
        Decision(kind="fall back to delete-first", phase="provision", at="t", reason="slot")
    )
    journal.state.decide(
        Decision(kind="redo", phase="inspect", at="t", reason="gone", phases=["copy"])
    )
    journal.save()  # as the killed run left it
    resumed = Journal.load(journal.path)
    ctx = SimpleNamespace(journal=resumed, state=resumed.state, report=RotationReport("db"))
    _apply_decisions(ctx)  # type: ignore[arg-type]
    assert resumed.state.strategy == "delete-first" and resumed.state.pending == []
    assert resumed.status_of("delete-old") == "redo" and resumed.status_of("copy") == "redo"
    assert Journal.load(journal.path).state.pending == []  # saved as applied

    resumed.state.decide(Decision(kind="teleport", phase="copy", at="t", reason="?"))
    with pytest.raises(RotationError, match="decision this version does not know: teleport"):
        _apply_decisions(ctx)  # type: ignore[arg-type]
