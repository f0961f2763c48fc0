"""A newcomer's first run: mistakes in a copied config are errors, not silent answers."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from render_rotator import resume, rotate
from render_rotator.cli import cli
from render_rotator.render import RenderClient
from render_rotator.rotation.decisions import FallBackToDeleteFirst
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.observer import LogUI
from render_rotator.rotation.report import RotationReport
from render_rotator.rotation.workflow import _run_phase
from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.ui import PlainUI, human_bytes
from tests.rotation_support import (
    PAID_PLAN,
    App,
    error_lines,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)
from tests.sample_data import unique_name


@pytest.fixture(scope="module")
def app(emu: RenderEmulator) -> App:
    return make_app(emu)


def test_status_of_a_database_not_on_render_is_an_error(
    emu: RenderEmulator, app: App, tmp_path: Path
) -> None:
    config = write_config(tmp_path, app)
    config.write_text(config.read_text().replace(f'name = "{app.name}"', 'name = "no-such-db"'))
    result = run_cli(emu, "status", "-c", str(config))
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "not found on Render: no-such-db" in line and "RENDER_API_KEY" in line
    row = next(r for r in result.stdout.splitlines() if r.startswith("no-such-db"))
    assert "never" not in row  # a database that is not there does not "never expire"
    as_json = run_cli(emu, "status", "-c", str(config), "--json")
    assert as_json.exit_code == 2
    assert report_of(as_json)["ok"] is False


def test_status_of_a_found_database_exits_0(emu: RenderEmulator, app: App, tmp_path: Path) -> None:
    result = run_cli(emu, "status", "-c", str(write_config(tmp_path, app)), "--json")
    assert result.exit_code == 0, result.output
    data = report_of(result)
    assert data["ok"] is True and data["databases"][0]["id"] == app.postgres_id


# -- stopping the sandbox any way leaves nothing behind --------------------------------


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


LAST_LINE = "Ctrl-C to stop"
FIRST_LINE = "Render emulator running"  # stopped while it still announces itself


@pytest.mark.parametrize(
    ("signum", "seed", "stop_at"),
    [
        (signal.SIGTERM, True, LAST_LINE),
        (signal.SIGHUP, False, LAST_LINE),
        (signal.SIGINT, False, LAST_LINE),
        (signal.SIGTERM, True, FIRST_LINE),
        (signal.SIGINT, False, FIRST_LINE),
    ],
)
def test_a_stopped_sandbox_leaves_no_server_and_no_files(
    signum: int, seed: bool, stop_at: str
) -> None:
    # a directory the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700)
    tmp = Path(tempfile.mkdtemp(prefix="rr-sandbox-test-"))
    tmp.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RENDER_API_KEY", "RENDER_API_URL")}
    env.update({"TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"})
    args = [sys.executable, "-m", "render_rotator", "sandbox", *(["--seed"] if seed else [])]
    proc = subprocess.Popen(  # noqa: S603
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not (seen and seen[-1].startswith(stop_at)):
            seen.append(lines.get(timeout=180))
        output = "".join(seen)
        if stop_at == FIRST_LINE:
            proc.send_signal(signum)  # at once: the announcement is still being written
        else:
            assert _processes_mentioning(str(tmp)), "the sandbox's PostgreSQL is not running?"
            assert any(p.name.startswith("rr-pg") for p in tmp.iterdir())
            if seed:
                config = next(x for x in seen if "RENDER_ROTATOR_CONFIG=" in x).split("=", 1)[1]
                assert Path(config.strip()).is_file()
            else:
                assert "--seed" in output
            proc.send_signal(signum)
        code = proc.wait(timeout=180)
        reader.join(timeout=10)
        while not lines.empty():
            seen.append(lines.get())
        assert code == 0, "".join(seen)
        assert "stopping the sandbox" in "".join(seen)
        assert _processes_mentioning(str(tmp)) == []
        assert list(tmp.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_mentioning(str(tmp)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


# -- Ctrl-C during a rotation says where things stand ----------------------------------


class _StopWhileWaiting(LogUI):
    """Ctrl-C arriving while the rotation waits for the new database."""

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        if "to become available" in what:
            raise KeyboardInterrupt
        yield


def test_ctrl_c_during_a_rotation_says_what_state_things_are_in(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The old database is already gone (delete-first): nothing can land back on it, so the
    report says what is frozen, that the old database was deleted, where the backup is, and
    that resume finishes the rotation."""
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first", freeze="suspend")
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        result = rotate(config, yes=True, client=client, ui=_StopWhileWaiting())
        [report] = result.reports
        assert result.exit_code == 1 and not report.ok
        message = report.message
        assert message.startswith("interrupted in phase provision")
        assert f"suspended (frozen): {app.service_id}" in message
        assert f"the old database {app.postgres_id} was deleted (after the backup)" in message
        backup = message.split("Now: ", 1)[1].split("backup: ", 1)[1].split(";", 1)[0]
        assert Path(backup).exists()
        assert "Run `render-rotator resume` to finish the rotation" in message
        assert str(journal_file(config, app)) in message

        # and resume does finish it
        resumed = resume(config, client=client)
    assert resumed.exit_code == 0 and resumed.reports[0].rotated


# -- wording ---------------------------------------------------------------------------


def test_resume_with_nothing_pending(emu: RenderEmulator, app: App, tmp_path: Path) -> None:
    result = run_cli(emu, "resume", "-c", str(write_config(tmp_path, app)))
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first == f"{app.name}: no change - nothing to resume: no unfinished rotation " + (
        "(journal or on Render)"
    )
    assert f"  database:     {app.postgres_id}" in result.stdout
    assert "  old:" not in result.stdout


def test_verify_says_its_result_once_and_counts_ways_right(pg18: Cluster) -> None:
    a, b = unique_name("va"), unique_name("vb")
    urls = [pg18.create_database(name) for name in (a, b)]
    for name in (a, b):
        pg18.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", dbname=name)
    env = {"RENDER_ROTATOR_SOURCE_URL": urls[0], "RENDER_ROTATOR_TARGET_URL": urls[1]}
    try:
        same = CliRunner().invoke(cli, ["verify"], env=env)
        assert same.exit_code == 0, same.output
        assert same.output.count("copy verified") == 1, same.output  # stdout and log together
        pg18.execute("INSERT INTO t VALUES (2)", dbname=b)
        differs = CliRunner().invoke(cli, ["verify"], env=env)
        assert differs.exit_code == 3
        assert "differs from source in 1 way: " in differs.stdout
    finally:
        for name in (a, b):
            pg18.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_demo_quiet_shows_no_fallback_warning_and_says_where_its_files_are() -> None:
    env = {"RENDER_API_KEY": None, "RENDER_API_URL": None, "RENDER_ROTATOR_CONFIG": None}
    result = CliRunner().invoke(cli, ["-q", "demo", "--rows", "100"], env=env)
    assert result.exit_code == 0, result.output
    assert "switching to delete-first" not in result.stderr
    assert "WARNING" not in result.stderr
    assert result.stdout.startswith("myapp-db: rotated to dpg-")
    note = next(line for line in result.stdout.splitlines() if "demo's config" in line)
    workdir = Path(note.split(" kept in ", 1)[1].split(" ", 1)[0])
    try:
        assert (workdir / "render-rotator.toml").is_file()
        assert f"rm -rf {workdir}" in note
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_demo_says_it_is_loading_sample_data() -> None:
    env = {"RENDER_API_KEY": None, "RENDER_API_URL": None, "RENDER_ROTATOR_CONFIG": None}
    result = CliRunner().invoke(cli, ["demo", "--rows", "1234", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "1,234 rows of sample data to load" in result.stderr
    # auto tries to provision before the freeze; refused a second free database, provision
    # gives way: freeze, backup, delete-old as its own step, then provision again
    order = [
        "phase provision: started",
        "phase provision: paused: Render refused a second free database",
        "phase freeze: started",
        "phase backup: done in",
        "phase delete-old: started",
        "phase delete-old: done in",
        "phase provision: started",
        "phase provision: done in",
    ]
    at = 0
    for step in order:  # each after the one before
        at = result.stderr.index(step, at)
    report = report_of(result)
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["delete-old"]["status"] == "done" and phases["delete-old"]["seconds"] > 0
    assert phases["provision"]["status"] == "done" and phases["provision"]["attempts"] == 2
    # when: delete-old's last run began after provision's first and ended before its last
    assert phases["delete-old"]["finished_at"] <= phases["provision"]["started_at"]
    [decision] = report["decisions"]
    assert decision["decision"] == "fall back to delete-first"
    assert decision["phase"] == "provision"
    workdir = Path(report_of(result)["backup"]["path"]).parents[1]
    shutil.rmtree(workdir, ignore_errors=True)


def test_a_phase_that_falls_back_gives_way_to_the_runner(tmp_path: Path, caplog) -> None:
    journal = Journal(path=tmp_path / "j.json", database="db")
    journal.state.strategy = "create-first"
    ctx = SimpleNamespace(
        journal=journal, state=journal.state, ui=PlainUI(), report=RotationReport("db")
    )
    _run_phase(ctx, "delete-old", lambda c: False)  # type: ignore[arg-type]
    assert journal.phases["delete-old"].status == "skipped"

    def provision(c: Any) -> FallBackToDeleteFirst:
        return FallBackToDeleteFirst("the free slot is taken")

    with caplog.at_level(logging.INFO, logger="render_rotator"):
        gave_way = _run_phase(ctx, "provision", provision)  # type: ignore[arg-type]
    assert gave_way is True
    assert "phase provision: paused: the free slot is taken" in caplog.text
    assert "phase provision: done" not in caplog.text
    # the runner, not the phase, switched strategy and put delete-old back in line
    assert journal.state.strategy == "delete-first"
    assert journal.phases["provision"].status == "deferred"
    assert journal.phases["delete-old"].status == "redo"
    [decision] = journal.state.decisions
    assert (decision.kind, decision.phase, decision.applied) == (
        "fall back to delete-first",
        "provision",
        True,
    )
    saved = Journal.load(journal.path)  # what a resumed run would find
    assert saved.state.strategy == "delete-first" and saved.state.pending == []
    assert {r.name: r.status for r in ctx.report.phases} == {
        "delete-old": "to redo",
        "provision": "deferred",
    }


# -- one measure of bytes ----------------------------------------------------------------


@pytest.mark.parametrize("plan", ["free", PAID_PLAN])
def test_progress_and_report_agree_on_bytes(emu: RenderEmulator, tmp_path: Path, plan: str) -> None:
    app = make_app(emu, plan=plan, rows=500)
    config = write_config(tmp_path, app)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["strategy"] == ("delete-first" if plan == "free" else "create-first")
    copied = report["bytes_copied"]
    assert copied and copied > 0
    [last] = [line for line in result.stderr.splitlines() if "INFO    copy: " in line][-1:]
    assert f"copy: {human_bytes(copied)}, " in last, last
