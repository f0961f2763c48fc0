"""A rotation SIGKILLed at every step of create-first and of auto's fallback, then finished
by `rotate` on a fresh machine (no journal; the backup directory kept, as a CI cache or a
mounted volume keeps it): exactly one new database, the data intact, the app thawed, and the
old database deleted only after a verified backup.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    DONE,
    PAID_PLAN,
    assert_rotated,
    inventory,
    make_app,
    report_of,
    rotate_and_kill,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.usefixtures("slow_api")

_FROZEN_BY_THE_DEAD_RUN = (
    "auto on the free plan killed after freeze (before delete-old): no new database exists, "
    "so a run without the journal cannot tell the suspended service from one the user "
    "suspended; it leaves it suspended and reports success with the app down. The dead run's "
    "lease (on the old database's comment) could name the services it froze"
)
_REPOINTED = (
    "create-first killed after repoint (every target on the new database, app frozen, not "
    "deployed): without the journal, _discover takes the new database as the one in use, "
    "rotates it again (a third database) and leaves the original old one undeleted"
)

CASES = [
    *[
        pytest.param("create-first", PAID_PLAN, phase, DONE, 1, id=f"create-first-after-{phase}")
        for phase in ("provision", "freeze", "backup", "copy", "verify")
    ],
    pytest.param(
        "create-first",
        PAID_PLAN,
        "repoint",
        DONE,
        1,
        id="create-first-after-repoint",
        marks=pytest.mark.xfail(strict=True, reason=_REPOINTED),
    ),
    pytest.param("create-first", PAID_PLAN, "provision", ("started",), 1, id="cf-in-provision"),
    pytest.param("create-first", PAID_PLAN, "copy", ("started",), 1, id="cf-in-copy"),
    pytest.param("auto", "free", "provision", ("deferred",), 1, id="auto-provision-gave-way"),
    *[
        pytest.param(
            "auto",
            "free",
            phase,
            DONE,
            1,
            id=f"auto-after-{phase}",
            marks=pytest.mark.xfail(strict=True, reason=_FROZEN_BY_THE_DEAD_RUN),
        )
        for phase in ("freeze", "backup")
    ],
    *[
        pytest.param("auto", "free", phase, DONE, 1, id=f"auto-after-{phase}")
        for phase in ("delete-old", "copy", "verify", "repoint")
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


@pytest.mark.xfail(strict=True, reason=_REPOINTED)
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
