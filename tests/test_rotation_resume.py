"""Crash a real `render-rotator rotate` process (SIGKILL) at every phase boundary, and in the
middle of phases, then `resume`: the end state must be the one of an uninterrupted run, with
exactly one new database. A fresh machine with no journal must rediscover the half-done
rotation from Render and finish it instead of creating another database.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator.rotation.phases import PHASE_NAMES
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    DONE,
    PAID_PLAN,
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
    # every API answer takes a little while, so the killer's poll of the journal (every 2 ms)
    # lands close to the phase boundary rather than somewhere in the next phase
    emu.faults.clear()
    emu.faults.latency(0.01)
    yield
    emu.faults.clear()


CASES = [
    # the free plan with strategy auto: Render refuses a second free database -> delete-first
    *[
        pytest.param("auto", "free", phase, DONE, id=f"delete-first-after-{phase}")
        for phase in (
            "inspect",
            "freeze",
            "backup",
            "delete-old",
            "provision",
            "copy",
            "verify",
            "repoint",
            "deploy",
            "retire",
        )
    ],
    # a paid plan, create-first: the boundaries where its path differs
    *[
        pytest.param("create-first", PAID_PLAN, phase, DONE, id=f"create-first-after-{phase}")
        for phase in ("provision", "copy", "verify", "repoint", "deploy", "retire")
    ],
    # strategy delete-first given explicitly: delete-old runs as its own phase
    pytest.param(
        "delete-first", "free", "delete-old", DONE, id="explicit-delete-first-after-delete-old"
    ),
    # killed inside a phase, in the middle of its work
    pytest.param("auto", "free", "provision", ("started",), id="delete-first-in-provision"),
    pytest.param("create-first", PAID_PLAN, "copy", ("started",), id="create-first-in-copy"),
    pytest.param("create-first", PAID_PLAN, "deploy", ("started",), id="create-first-in-deploy"),
]


@pytest.mark.parametrize(("strategy", "plan", "phase", "statuses"), CASES)
def test_killed_then_resumed_ends_like_an_uninterrupted_run(
    emu: RenderEmulator,
    tmp_path: Path,
    strategy: str,
    plan: str,
    phase: str,
    statuses: tuple[str, ...],
) -> None:
    app = make_app(emu, plan=plan)
    config = write_config(tmp_path, app, strategy=strategy)
    before = inventory(app.external_url)
    at_kill = rotate_and_kill(emu, app, config, phase, statuses)
    assert at_kill["status"] == "running"
    # killed right there: no later phase had done anything (one with nothing to do for this
    # strategy may have been skipped already: that takes no time and changes nothing)
    later = PHASE_NAMES[PHASE_NAMES.index(phase) + 1 :]
    assert not [p for p in later if at_kill["phases"].get(p, {}).get("status") == "done"]

    # a second rotate refuses while the journal is unfinished, and changes nothing
    refused = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert refused.exit_code == 2, refused.output
    [line] = error_lines(refused)
    assert "unfinished rotation" in line and "render-rotator resume" in line
    assert "--restart" in line

    # status shows the rotation in progress
    status = report_of(run_cli(emu, "status", "-c", str(config), "--json"))["databases"]
    assert all(entry["rotation_in_progress"] for entry in status)

    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    report = report_of(resumed)
    assert_rotated(app, report, before, config=config)
    if at_kill["state"].get("new_id"):
        assert report["new"]["id"] == at_kill["state"]["new_id"]
    expected = "create-first" if strategy == "create-first" else "delete-first"
    assert report["strategy"] == expected
    # nothing left to resume
    again = run_cli(emu, "resume", "-c", str(config), "--json")
    assert again.exit_code == 0 and report_of(again)["message"].startswith("nothing to resume")


@pytest.mark.parametrize(
    ("phase", "command", "cut_repoint", "lose_state"),
    [
        ("provision", ["rotate", "--yes"], False, True),
        ("verify", ["resume"], False, True),
        ("verify", ["rotate", "--yes"], True, True),
        ("copy", ["rotate", "--restart", "--yes"], False, False),
    ],
    ids=[
        "rotate-after-provision",
        "resume-after-verify",
        "rotate-after-half-a-repoint",
        "rotate-restart-after-copy",
    ],
)
def test_a_fresh_machine_finishes_the_half_done_rotation_found_on_render(
    emu: RenderEmulator,
    tmp_path: Path,
    phase: str,
    command: list[str],
    cut_repoint: bool,
    lose_state: bool,
) -> None:
    """No journal (a fresh machine, or `rotate --restart` discarding it): Render itself shows
    the half-done rotation (a newer rotation of the database that not every target uses)."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    at_kill = rotate_and_kill(emu, app, config, phase, DONE)
    new_id = at_kill["state"]["new_id"]
    if cut_repoint:  # the crash came between two targets of the repoint
        internal = emu.connection_info(new_id)["internalConnectionString"]
        emu.faults.clear()
        with _client(emu) as client:
            client.set_env_var(app.service_id, "DATABASE_URL", internal)
    if lose_state:  # the journal is lost with the machine (the backup directory too)
        shutil.rmtree(tmp_path / "state")
        shutil.rmtree(tmp_path / "backups")
    assert emu.service(app.service_id)["suspended"] == "suspended"  # frozen by the dead run

    result = run_cli(emu, command[0], "-c", str(config), *command[1:], "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"]["id"] == new_id  # finished, not another database
    assert f"finished a half-done rotation found on Render ({new_id})" in report["notes"]
    assert_rotated(app, report, before, config=config)


def _client(emu: RenderEmulator) -> Any:
    from render_rotator.render import RenderClient

    return RenderClient(api_key=emu.api_key, base_url=emu.base_url)
