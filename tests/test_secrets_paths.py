"""A URL where a path was expected, and a real API key in the environment, stay secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from render_rotator.cli import cli
from render_rotator.secrets import scrub


def test_a_url_used_as_a_path_has_its_password_blanked() -> None:
    text = f"cannot write backup to {Path('postgresql://app:Sup3r-s3cret@db.example/app')}"
    assert "Sup3r-s3cret" not in scrub(text)


def test_backup_given_a_url_instead_of_a_file_never_prints_its_password(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"RENDER_ROTATOR_SOURCE_URL": "postgresql://app:Sup3r-s3cret@127.0.0.1:1/app"}
    result = runner.invoke(
        cli, ["backup", "postgresql://app:Sup3r-s3cret@127.0.0.1:1/app"], env=env
    )
    assert result.exit_code != 0
    assert "Sup3r-s3cret" not in result.output


def test_sandbox_never_prints_a_real_api_key_from_the_environment(tmp_path: Path) -> None:
    real = "rnd_RealProductionKey1234567890"
    env = {**os.environ, "RENDER_API_KEY": real, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "render_rotator", "sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "export RENDER_API_KEY=" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the sandbox removes its cluster
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    output = "".join(lines) + (rest or "")
    assert "export RENDER_API_KEY=" in output, output
    assert real not in output


def test_an_error_that_quotes_a_secret_never_shows_it() -> None:
    """str() of any of our errors blanks what the secrets module knows, so a message that
    quotes a server or a tool (which may echo a password) cannot carry one."""
    from render_rotator import secrets
    from render_rotator.errors import DatabaseError

    secrets.register("Qz8-Leaky-Pa55word")
    error = DatabaseError(
        "the server said: role app password Qz8-Leaky-Pa55word rejected",
        hint="check postgresql://app:other-Pa55@db.example/app",
    )
    assert str(error) == (
        "the server said: role app password *** rejected (check postgresql://app:***@db.example/app)"
    )
