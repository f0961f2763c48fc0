"""A delete-first rotation killed right after it deleted the old database (the backup is the
only copy), then its journal damaged by hand: truncated, or facts in it changed. `resume`
either finishes or stops with one line and changes nothing; `rotate --restart` then finishes
from the backup. The data always ends intact in exactly one new database."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    DONE,
    assert_rotated,
    error_lines,
    inventory,
    journal_file,
    make_app,
    report_of,
    rotate_and_kill,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.usefixtures("slow_api")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "empty": lambda p: p.write_text(""),
    "old-not-deleted": _edit(lambda d: d["state"].update(old_deleted=False)),
    "backup-path-elsewhere": _edit(
        lambda d: d["state"]["backup"].update(path="/nonexistent/backup.dump")
    ),
    "backup-sha-wrong": _edit(lambda d: d["state"]["backup"].update(sha256="0" * 64)),
    "phases-forgotten": _edit(lambda d: d.update(phases={})),
    "strategy-flipped": _edit(lambda d: d["state"].update(strategy="create-first")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_journal_never_costs_the_data(
    emu: RenderEmulator, tmp_path: Path, damage: str
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    config = write_config(tmp_path, app, strategy="delete-first")
    rotate_and_kill(emu, app, config, "delete-old", DONE)
    assert app.postgres_id not in emu.postgres_ids()
    path = journal_file(config, app)
    DAMAGE[damage](path)
    ids = emu.postgres_ids()
    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    if resumed.exit_code == 0:
        assert_rotated(app, report_of(resumed), before, config=config)
        return
    assert len(error_lines(resumed)) == 1, resumed.output
    assert emu.postgres_ids() == ids  # nothing changed on Render
    restarted = run_cli(emu, "rotate", "-c", str(config), "--yes", "--restart", "--json")
    assert restarted.exit_code == 0, restarted.output
    assert_rotated(app, report_of(restarted), before, config=config)
