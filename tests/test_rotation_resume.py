"""Crash a real `render-rotator rotate` process (SIGKILL) at every phase boundary, and in the
middle of phases, then `resume`: the end state must be the one of an uninterrupted run, with
exactly one new database. (A fresh machine without the journal: test_rotation_rediscovery.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render_rotator.rotation.phases import phase_order
from render_rotator.rotation.state import RotationState
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

pytestmark = pytest.mark.usefixtures("slow_api")


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
    # auto's fallback decided before the freeze (the early provision was refused, nothing
    # deleted), then the second provision, after delete-old: killed after it and inside it
    pytest.param("auto", "free", "provision", ("deferred",), id="delete-first-provision-gave-way"),
    pytest.param("auto", "free", "provision", DONE, 2, id="delete-first-after-provision-2"),
    pytest.param("auto", "free", "provision", ("started",), 2, id="delete-first-in-provision-2"),
    # a paid plan, create-first (provision before the freeze): where its path differs
    *[
        pytest.param("create-first", PAID_PLAN, phase, DONE, id=f"create-first-after-{phase}")
        for phase in (
            "inspect",
            "provision",
            "freeze",
            "backup",
            "copy",
            "verify",
            "repoint",
            "deploy",
            "retire",
        )
    ],
    # strategy delete-first given explicitly: delete-old runs as its own phase
    pytest.param(
        "delete-first", "free", "delete-old", DONE, id="explicit-delete-first-after-delete-old"
    ),
    # killed inside a phase, in the middle of its work
    pytest.param("auto", "free", "provision", ("started",), id="delete-first-in-provision"),
    pytest.param(
        "create-first", PAID_PLAN, "provision", ("started",), id="create-first-in-provision"
    ),
    pytest.param("create-first", PAID_PLAN, "copy", ("started",), id="create-first-in-copy"),
    pytest.param("create-first", PAID_PLAN, "backup", ("started",), id="create-first-in-backup"),
    pytest.param("create-first", PAID_PLAN, "deploy", ("started",), id="create-first-in-deploy"),
]


# the attempt defaults to the first run of the phase
CASES = [c if len(c.values) == 5 else pytest.param(*c.values, 1, id=c.id) for c in CASES]


@pytest.mark.parametrize(("strategy", "plan", "phase", "statuses", "attempt"), CASES)
def test_killed_then_resumed_ends_like_an_uninterrupted_run(
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
    at_kill = rotate_and_kill(emu, app, config, phase, statuses, attempt)
    assert at_kill["status"] == "running"
    # killed right there: no later phase (in the order this rotation runs them) had done
    # anything (one with nothing to do for this strategy may have been skipped already)
    order = [name for name, _ in phase_order(RotationState.from_dict(at_kill["state"]))]
    # create-first copies beside its backup (phases.beside): the copy ends with the backup
    together = "copy" if strategy == "create-first" and phase == "backup" else None
    later = [p for p in order[order.index(phase) + 1 :] if p != together]
    assert not [p for p in later if at_kill["phases"].get(p, {}).get("status") == "done"]
    if at_kill["phases"].get("backup", {}).get("status") != "done":
        # whatever the strategy, the old database outlives the freeze and the backup
        assert app.postgres_id in emu.postgres_ids()

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
