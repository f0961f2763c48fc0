"""Two runs of auto on the free plan (slot taken) for the same database from different state
dirs, the second started when the first reaches each step (same and different backup_dir):
one rotation happens, the second run changes nothing, and the end state is one new database
holding the data, the app thawed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    assert_rotated,
    inventory,
    journal_file,
    make_app,
    subprocess_env,
    write_config,
)

pytestmark = pytest.mark.usefixtures("slow_api")


def _start(emu: RenderEmulator, config: Path, *extra: str) -> subprocess.Popen[str]:
    env = subprocess_env(emu)
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "render_rotator",
            "rotate",
            "-c",
            str(config),
            "--yes",
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=config.parent,
    )


STEPS = [
    ("provision", ("deferred",), 1),
    ("freeze", ("done",), 1),
    ("backup", ("done",), 1),
    ("delete-old", ("done",), 1),
    ("provision", ("started",), 2),
    ("copy", ("started",), 1),
    ("verify", ("done",), 1),
    ("repoint", ("done",), 1),
    ("deploy", ("started",), 1),
]


@pytest.mark.parametrize("shared", [True, False], ids=["same-backup-dir", "own-backup-dir"])
@pytest.mark.parametrize(
    ("phase", "statuses", "attempt"),
    STEPS,
    ids=[f"{p}-{s[0]}-{a}" for p, s, a in STEPS],
)
def test_a_second_run_started_at_each_step_changes_nothing(
    emu: RenderEmulator,
    tmp_path: Path,
    shared: bool,
    phase: str,
    statuses: tuple[str, ...],
    attempt: int,
) -> None:
    app = make_app(emu, plan="free")
    before = inventory(app.external_url)
    extra = {"backup_dir": str(tmp_path / "backups")} if shared else {}
    first = write_config(tmp_path / "laptop", app, **extra)
    second = write_config(tmp_path / "scheduled", app, **extra)
    proc = _start(emu, first)
    journal = journal_file(first, app)
    deadline = time.monotonic() + 120
    while True:
        try:
            data = json.loads(journal.read_text())
        except (FileNotFoundError, ValueError):
            data = None
        entry = data["phases"].get(phase, {}) if data else {}
        if entry.get("status") in statuses and entry.get("attempts", 0) >= attempt:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    other = _start(emu, second, "--if-expiring-within")  # the daily job
    out2, err2 = other.communicate(timeout=300)
    out1, err1 = proc.communicate(timeout=300)
    assert proc.returncode == 0, err1[-3000:]
    if other.returncode == 0:  # it started after the first run had finished: not due
        assert json.loads(out2)["rotated"] is False, err2[-3000:]
        assert_rotated(app, json.loads(out1), before, config=first)
        return
    # refused by the lease (2); or, with its own backup_dir, inside the delete-first window
    # where no database its targets use exists and it has no backup: stops (1)
    assert other.returncode in (1, 2), err2[-3000:]
    assert (
        not journal_file(second, app).exists()
        or json.loads(journal_file(second, app).read_text()).get("status") != "running"
    ), err2[-3000:]
    errors = [ln for ln in err2.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err2[-3000:]
    assert_rotated(app, json.loads(out1), before, config=first)
