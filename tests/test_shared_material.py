"""Tests that need the project's `shared` folder skip with directions locally, fail in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NEEDS_SHARED = ["test_render_recorded.py", "test_emulator_recorded.py"]


def _pytest(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RENDER_ROTATOR_REQUIRE_SHARED"}
    env["RENDER_ROTATOR_SHARED"] = str(tmp_path / "no-shared-here")
    if require:
        env["RENDER_ROTATOR_REQUIRE_SHARED"] = "1"
    return subprocess.run(
        # -n 0: the two small modules run in this one process, not in workers of their own
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0"]
        + [str(HERE / name) for name in NEEDS_SHARED],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE.parent,
        timeout=300,
        check=False,
    )


def test_missing_shared_skips_locally_saying_how_to_get_it(tmp_path: Path) -> None:
    run = _pytest(tmp_path, require=False)
    assert run.returncode in (0, 5), run.stdout + run.stderr  # 5: every module skipped
    assert "skipped" in run.stdout
    assert "no-shared-here" in run.stdout
    assert "RENDER_ROTATOR_SHARED" in run.stdout and "beside the clone" in run.stdout


def test_missing_shared_fails_in_ci(tmp_path: Path) -> None:
    run = _pytest(tmp_path, require=True)
    assert run.returncode not in (0, 5), run.stdout + run.stderr
    assert "RENDER_ROTATOR_REQUIRE_SHARED is set" in run.stdout + run.stderr


@pytest.mark.parametrize("require", [False, True])
def test_present_shared_is_used(require: bool) -> None:
    from recorded import recorded_dir, require_shared

    if not recorded_dir().is_dir():
        pytest.skip("shared/ is not beside this clone")
    assert require_shared(recorded_dir()) == recorded_dir()
