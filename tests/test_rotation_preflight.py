"""Bad settings found before anything is frozen: the app never pays a freeze for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import error_lines, make_app, run_cli, write_config

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


@pytest.mark.parametrize("where", ["a-file", "/proc/sys"])
def test_an_unusable_backup_dir_is_refused_before_anything_is_frozen(
    emu: RenderEmulator, tmp_path: Path, where: str
) -> None:
    app = make_app(emu)
    backup_dir = str(tmp_path / where) if where == "a-file" else where
    if where == "a-file":
        Path(backup_dir).write_text("not a directory\n")
    config = write_config(tmp_path, app, backup_dir=backup_dir)
    before = app.snapshot()
    emu.clear_requests()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and "backup_dir" in lines[0] and "cannot hold a backup" in lines[0]
    assert app.snapshot() == before  # nothing created, deleted or repointed
    changes = [(m, p) for m, p, _ in emu.requests if m != "GET"]
    assert changes == []  # never suspended, not even for a moment
