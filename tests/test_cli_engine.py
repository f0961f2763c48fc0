"""The engine commands through the real CLI: output, --json, exit codes, secrets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from render_rotator.cli import cli
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import make_rich_database, unique_name


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _drop(cluster: Cluster, name: str) -> None:
    cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_json_from_env_urls(runner: CliRunner, pg18: Cluster):
    name, target = unique_name("cli"), unique_name("clidst")
    source = make_rich_database(pg18, name)
    env = {
        "RENDER_ROTATOR_SOURCE_URL": source,
        "RENDER_ROTATOR_TARGET_URL": pg18.url(target),
        "RENDER_ROTATOR_ADMIN_URL": pg18.admin_url,
    }
    try:
        result = runner.invoke(cli, ["migrate", "--create-db", target, "--json"], env=env)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["ok"] is True and data["verified"] is True
        assert data["verification"]["rows"] == 500 + 1500 + 50
        assert pg18.password not in result.output
        assert ":***@" in data["source"]
    finally:
        _drop(pg18, name)
        _drop(pg18, target)


def test_backup_restore_verify_roundtrip(runner: CliRunner, pg18: Cluster, tmp_path):
    name, target = unique_name("rt"), unique_name("rtdst")
    source = make_rich_database(pg18, name)
    pg18.create_database(target)
    archive = tmp_path / "app.dump"
    try:
        backup = runner.invoke(cli, ["backup", source, str(archive), "--json"])
        assert backup.exit_code == 0, backup.output
        info = json.loads(backup.stdout)
        assert info["sha256"] and info["size_bytes"] == archive.stat().st_size
        assert info["inventory"]["tables"]["public.orders"] == 1500
        restore = runner.invoke(cli, ["restore", pg18.url(target), str(archive)])
        assert restore.exit_code == 0, restore.output
        verify = runner.invoke(cli, ["verify", source, pg18.url(target)])
        assert verify.exit_code == 0
        assert "copy verified" in verify.stdout
        pg18.execute("DELETE FROM audit_log WHERE message = 'event 3'", dbname=target)
        mismatch = runner.invoke(cli, ["verify", source, pg18.url(target), "--json"])
        assert mismatch.exit_code == 3
        data = json.loads(mismatch.stdout)
        assert data["equal"] is False
        assert "table public.audit_log: 50 rows on source, 49 on target" in data["differences"]
    finally:
        _drop(pg18, name)
        _drop(pg18, target)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["migrate", "mysql://a:b@c/d", "postgresql://a@b/c"], 2, "not a PostgreSQL URL"),
        (
            ["migrate", "postgresql://a@b/c", "postgresql://a@b/d", "--create-db", "x"],
            2,
            "create_db (--create-db) needs admin_url (--admin-url)",
        ),
        (["backup", "postgresql://a@b/c", "f", "--jobs", "2"], 2, "--jobs needs --format"),
        (
            ["restore", "postgresql://a@127.0.0.1:1/c", "/nonexistent/file.dump"],
            2,
            "does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner: CliRunner, args, code, needle):
    result = runner.invoke(cli, args)
    assert result.exit_code == code
    errors = [ln for ln in result.stderr.splitlines() if "rror" in ln]
    assert len(errors) == 1 and needle in errors[0]


def test_wrong_password_exit_1_without_secret(runner: CliRunner, pg18: Cluster, tmp_path):
    bad = pg18.url("postgres", "postgres", "hunter2-wrong")
    result = runner.invoke(cli, ["backup", bad, str(tmp_path / "x.dump"), "--json"])
    assert result.exit_code == 1
    assert "authentication failed" in result.stderr
    assert "hunter2-wrong" not in result.output
    assert json.loads(result.stdout)["ok"] is False


def test_password_on_command_line_is_warned_about(runner: CliRunner, pg18: Cluster, tmp_path):
    result = runner.invoke(cli, ["backup", pg18.admin_url, str(tmp_path / "w.dump")])
    assert result.exit_code == 0, result.output
    assert "visible to other local users" in result.stderr
    assert pg18.password not in result.output


def test_module_entry_point_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "render_rotator", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "render-rotator" in out.stdout and "0.1.0" in out.stdout


def test_cli_connect_timeout_holds_against_a_silent_server(runner: CliRunner):
    """The CLI waits on connections in Python (so a signal can stop it): connect_timeout
    must hold there too, against a host that accepts TCP and never answers."""
    import socket
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"postgresql://u:pw@127.0.0.1:{listener.getsockname()[1]}/db"
        started = time.monotonic()
        result = runner.invoke(
            cli,
            ["verify", "--connect-timeout", "2"],
            env={
                "RENDER_ROTATOR_SOURCE_URL": url,
                "RENDER_ROTATOR_TARGET_URL": url,
            },
        )
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert elapsed < 2 + 3


def test_sslmode_disable_against_a_tls_only_server_says_so(runner: CliRunner, pg18: Cluster):
    url = pg18.admin_url
    url += ("&" if "?" in url else "?") + "sslmode=disable"
    result = runner.invoke(
        cli, ["verify"], env={"RENDER_ROTATOR_SOURCE_URL": url, "RENDER_ROTATOR_TARGET_URL": url}
    )
    assert result.exit_code != 0
    assert "accepts only TLS connections" in result.output
    assert "sslmode=require" in result.output
    assert pg18.password not in result.output
