"""One rotation at a time across the delete-first window.

Between the old database's deletion and the new database carrying its marker, no database
holds the lease. A second run (another state dir, sharing the backup dir, as a laptop and a
scheduled job on one machine may) would find the old database gone and its backup, and would
finish "the interrupted rotation" while the first is still alive. The lease beside the backup
must refuse it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from render_rotator.rotation import lease as lease_mod
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    assert_rotated,
    error_lines,
    inventory,
    journal_file,
    make_app,
    run_cli,
    write_config,
)
from tests.test_rotation_lease import _start


def _wait_for(path: Path, proc: Any, condition: Any) -> dict[str, Any]:
    """The journal at `path` once `condition(journal)` holds (the run must still be alive)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if data and condition(data):
            return data
        if proc.poll() is not None:
            raise AssertionError(f"the first run ended ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, "the first run never reached the window"
        time.sleep(0.01)


def test_a_second_run_is_refused_between_the_deletion_and_the_new_marker(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    shared = tmp_path / "backups"  # both configs keep their backups in one place
    laptop = write_config(tmp_path / "laptop", app, backup_dir=str(shared))
    scheduled = write_config(tmp_path / "scheduled", app, backup_dir=str(shared))
    # Render frees the deleted free database's slot only after a while: the first run waits
    # there, the old database deleted and no new one yet
    emu.faults.refuse_free_after_delete(seconds=8)
    try:
        first = _start(emu, laptop)
        journal = journal_file(laptop, app)
        _wait_for(journal, first, lambda j: bool(j["state"].get("free_slot_wait")))

        second = run_cli(emu, "rotate", "-c", str(scheduled), "--yes", "--json")
        in_window = json.loads(journal.read_text())["state"]
        assert in_window.get("old_deleted") and not in_window.get("new_id")  # still inside
        assert second.exit_code == 2, second.output
        [line] = error_lines(second)
        assert f"another render-rotator run is rotating {app.name}" in line, line
        assert f"pid {first.pid}" in line and "nothing was changed" in line, line
        assert not journal_file(scheduled, app).exists()  # the second run wrote nothing
        assert lease_mod.file_for(Path(in_window["backup"]["path"])).exists()

        out, err = first.communicate(timeout=300)
    finally:
        emu.faults.clear()
    assert first.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert_rotated(app, report, before, config=laptop)  # exactly one new database
    # the lease left the backup's side once the new database carried it
    archive = Path(report["backup"]["path"])
    assert not lease_mod.file_for(archive).exists()


def test_a_lease_left_beside_the_backup_by_a_dead_run_does_not_block(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """A run killed in the window leaves its lease beside the backup; another run finishes
    the rotation from the backup (on this machine at once: the holder's process is gone)."""
    from tests.rotation_support import rotate_and_kill

    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    shared = tmp_path / "backups"
    laptop = write_config(tmp_path / "laptop", app, backup_dir=str(shared))
    scheduled = write_config(tmp_path / "scheduled", app, backup_dir=str(shared))
    emu.faults.refuse_free_after_delete(seconds=8)
    try:
        at_kill = rotate_and_kill(emu, app, laptop, "delete-old", ("done",))
    finally:
        emu.faults.clear()
    archive = Path(at_kill["state"]["backup"]["path"])
    held = json.loads(lease_mod.file_for(archive).read_text())
    assert held["state_dir"] == str(laptop.parent / "state")  # left by the killed run

    result = run_cli(emu, "resume", "-c", str(scheduled), "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, json.loads(result.stdout), before, config=scheduled)
