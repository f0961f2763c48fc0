"""The order of a rotation's steps around the write freeze, read from what Render was asked.

create-first provisions (and waits for `available`) before it freezes anything, so Render's
provisioning is not part of the app's downtime; a provisioning failure then costs no freeze
at all. auto on the free plan tries that too, and when Render refuses the second free
database it deletes the old one only after the freeze and a verified backup, exactly as
delete-first does. Real CLI runs on the emulator with real PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator.rotation.phases import PHASES, phase_order
from render_rotator.rotation.state import RotationState
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    App,
    assert_rotated,
    inventory,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


@pytest.fixture(autouse=True)
def _fresh_log(emu: RenderEmulator) -> Iterator[None]:
    emu.faults.clear()
    emu.requests.clear()
    yield
    emu.faults.clear()


def _index(requests: list[tuple[str, str, int]], method: str, path: str, status: int) -> int:
    """Position of the first request `method path` answered `status`."""
    for i, request in enumerate(requests):
        if request == (method, path, status):
            return i
    raise AssertionError(f"no {method} {path} -> {status} in {requests}")


def _creates(requests: list[tuple[str, str, int]]) -> list[tuple[int, int]]:
    """(position, status) of each create-database request."""
    return [(i, s) for i, (m, p, s) in enumerate(requests) if (m, p) == ("POST", "/postgres")]


def _journal(report: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(report["journal"]).read_text())
    return data


def _rotate(emu: RenderEmulator, app: App, config: Path) -> dict[str, Any]:
    before = inventory(app.external_url)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert_rotated(app, report, before, config=config)
    return report


def test_create_first_has_the_new_database_available_before_the_freeze(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    report = _rotate(emu, app, config)
    new_id = report["new"]["id"]
    requests = list(emu.requests)
    suspend = _index(requests, "POST", f"/services/{app.service_id}/suspend", 202)
    [(create, status)] = _creates(requests)
    assert status == 201 and create < suspend
    # the wait for `available` ended before the freeze: no poll of the new database while
    # frozen until the copy, which reads its connection info
    polls = [i for i, r in enumerate(requests) if r[:2] == ("GET", f"/postgres/{new_id}")]
    assert polls and polls[0] < suspend
    journal = _journal(report)
    phases = journal["phases"]
    assert phases["provision"]["seq"] < phases["freeze"]["seq"] < phases["backup"]["seq"]
    assert phases["provision"]["finished_at"] <= phases["freeze"]["started_at"]
    # the report lists the phases in the order they ran
    names = [p["name"] for p in report["phases"]]
    assert names.index("provision") < names.index("freeze")


def test_auto_with_the_free_slot_taken_deletes_only_after_freeze_and_backup(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan="free")
    config = write_config(tmp_path, app, strategy="auto")
    report = _rotate(emu, app, config)
    assert report["strategy"] == "delete-first"
    requests = list(emu.requests)
    suspend = _index(requests, "POST", f"/services/{app.service_id}/suspend", 202)
    delete = _index(requests, "DELETE", f"/postgres/{app.postgres_id}", 204)
    creates = _creates(requests)
    # tried before the freeze and refused; nothing deleted then; created after the deletion
    assert creates[0][0] < suspend and creates[0][1] == 400
    assert suspend < delete
    assert [s for i, s in creates if i > delete][-1] == 201
    assert not [i for i, s in creates if s == 201 and i < delete]
    phases = _journal(report)["phases"]
    # the deletion began after the backup was done (verified, on disk), provision ran twice
    assert phases["freeze"]["seq"] < phases["backup"]["seq"] < phases["delete-old"]["seq"]
    assert phases["backup"]["finished_at"] <= phases["delete-old"]["started_at"]
    assert phases["provision"]["attempts"] == 2 and phases["provision"]["status"] == "done"
    assert Path(report["backup"]["path"]).exists()


def test_a_provisioning_failure_before_the_freeze_freezes_nothing(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", provision_timeout=1)
    emu.faults.never_available(True)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = report_of(result)
    assert "did not become available" in report["message"]
    assert report.get("freeze_seconds") is None
    # the app never stopped: no freeze call at all; the unused new database is gone
    assert not [r for r in emu.requests if r[1].endswith(("/suspend", "/maintenance"))]
    assert emu.service(app.service_id)["suspended"] == "not_suspended"
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]


def test_phase_order_moves_only_provision_and_only_for_create_first() -> None:
    names = [n for n, _ in PHASES]
    early = [n for n, _ in phase_order(RotationState(strategy="create-first"))]
    assert sorted(early) == sorted(names)
    assert early[: early.index("freeze") + 1] == ["inspect", "upgrade", "provision", "freeze"]
    assert [n for n, _ in phase_order(RotationState(strategy="delete-first"))] == names
    rescue = RotationState(strategy="create-first", rescue={"upgrade_to": "basic_256mb"})
    assert [n for n, _ in phase_order(rescue)] == names


def test_this_modules_emulator_has_everything_ready_at_once(emu: RenderEmulator) -> None:
    # EMULATOR_DELAY = 0 above reaches the shared `emu` fixture
    assert emu.provision_delay == 0 and emu.deploy_delay == 0
