"""The command line's own output edges: a reader that leaves early, a URL where a file goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from render_rotator.cli import cli
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import make_app, write_config

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


def test_status_into_a_pipe_whose_reader_left_exits_quietly(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """`render-rotator status | head -1`: the reader is gone before the report is written.
    No "Broken pipe", no traceback: click's quiet exit (code 1)."""
    app = make_app(emu, rows=10)
    config = write_config(tmp_path, app)
    env = {
        **os.environ,
        "RENDER_API_URL": emu.base_url,
        "RENDER_API_KEY": emu.api_key,
        "GITHUB_ACTIONS": "",
    }
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before a line is written: every write fails
    try:
        run = subprocess.run(
            [sys.executable, "-m", "render_rotator", "status", "-c", str(config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Broken pipe" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "error" not in run.stderr.lower(), run.stderr
    assert run.returncode == 1


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_a_url_where_the_file_goes_is_a_usage_error(command: str) -> None:
    """`backup URL` with the URL also in the environment: the URL would be taken as the
    archive path. Exit 2, one line naming the mistake, the password never shown."""
    url = "postgresql://app:Sup3r-s3cret@127.0.0.1:1/app"
    envvar = "RENDER_ROTATOR_SOURCE_URL" if command == "backup" else "RENDER_ROTATOR_TARGET_URL"
    result = CliRunner().invoke(cli, [command, url], env={envvar: url})
    assert result.exit_code == 2
    assert "Sup3r-s3cret" not in result.output
    [line] = result.stderr.splitlines()
    assert line == (
        "error: FILE postgresql://app:***@127.0.0.1:1/app is a connection URL, not a file "
        f"path (give the archive path as the last argument ({envvar} holds the URL))"
    )


def test_a_url_given_twice_is_a_usage_error_too(tmp_path: Path) -> None:
    url = "postgresql://app:Sup3r-s3cret@127.0.0.1:1/app"
    result = CliRunner().invoke(cli, ["backup", url, url], env={"RENDER_ROTATOR_SOURCE_URL": None})
    assert result.exit_code == 2
    assert "Sup3r-s3cret" not in result.output
    assert result.stderr.splitlines() == [
        "error: FILE postgresql://app:***@127.0.0.1:1/app is a connection URL, not a file "
        "path (give the URL first, then the archive path)"
    ]
