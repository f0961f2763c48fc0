"""Crash a real `render-rotator rotate` process (SIGKILL) after a phase, then lose its journal
(a fresh machine, or `rotate --restart` discarding it): the next run must rediscover the
half-done rotation from Render and finish it instead of creating another database.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
    frozen = at_kill["phases"].get("freeze", {}).get("status") in DONE
    if lose_state:  # the journal is lost with the machine (the backup directory too)
        shutil.rmtree(tmp_path / "state")
        if frozen:  # create-first provisions before the freeze and the backup
            shutil.rmtree(tmp_path / "backups")
    # frozen by the dead run, unless it died before the freeze
    expected = "suspended" if frozen else "not_suspended"
    assert emu.service(app.service_id)["suspended"] == expected

    result = run_cli(emu, command[0], "-c", str(config), *command[1:], "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["new"]["id"] == new_id  # finished, not another database
    assert f"finished a half-done rotation found on Render ({new_id})" in report["notes"]
    assert_rotated(app, report, before, config=config)


def _client(emu: RenderEmulator) -> Any:
    from render_rotator.render import RenderClient

    return RenderClient(api_key=emu.api_key, base_url=emu.base_url)
