"""Rotations over Render's rules for connections: external URLs take TLS only.

The sandbox's external address refuses plain connections, as Render's does, and the rotation
asks for TLS on the external URLs it connects to. So each strategy succeeds with the default
install alone (the embedded PostgreSQL 18 client, Debian's directories hidden, no pg_dump on
PATH), and a client built without TLS is refused before anything changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render_rotator.postgres.binaries import DEBIAN_ROOT_ENV, PG_BIN_ENV
from render_rotator.sandbox.emulator import RenderEmulator
from tests.fake_clients import fake_client_without_tls
from tests.rotation_support import (
    PAID_PLAN,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0

# (strategy asked for, plan, strategy that runs)
STRATEGIES = [
    ("auto", "free", "delete-first"),
    ("create-first", PAID_PLAN, "create-first"),
    ("delete-first", "free", "delete-first"),
]


@pytest.fixture
def default_install_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no system PostgreSQL: Debian's directories hidden, no pg_dump on PATH."""
    empty_root = tmp_path / "no-debian-postgresql"
    empty_root.mkdir()
    empty_path = tmp_path / "no-bin"
    empty_path.mkdir()
    monkeypatch.setenv(DEBIAN_ROOT_ENV, str(empty_root))
    monkeypatch.setenv("PATH", str(empty_path))
    monkeypatch.delenv(PG_BIN_ENV, raising=False)


def _over_tls(url: str) -> bool:
    [(ssl,)] = execute(url, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return bool(ssl)


@pytest.mark.usefixtures("default_install_only")
@pytest.mark.parametrize(("strategy", "plan", "runs"), STRATEGIES)
def test_each_strategy_rotates_over_tls_with_the_default_install(
    emu: RenderEmulator, tmp_path: Path, strategy: str, plan: str, runs: str
) -> None:
    app = make_app(emu, plan=plan)
    config = write_config(tmp_path / "work", app, strategy=strategy)
    before = inventory(app.external_url + "?sslmode=require")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["strategy"] == runs
    info = assert_rotated(app, report, before, config=config)
    # Render's strings, written unchanged: no sslmode added to the values apps read
    env = app.env()
    assert env["DATABASE_URL"] == info["internalConnectionString"]
    assert "sslmode" not in info["externalConnectionString"]
    # the app's external URL (with the sslmode=require its owner wrote) connects over TLS;
    # the internal one over the private network, as inside Render
    assert "sslmode=require" in env["READ_URL"] and _over_tls(env["READ_URL"])
    assert not _over_tls(env["DATABASE_URL"])


@pytest.mark.parametrize(("strategy", "plan", "runs"), STRATEGIES)
def test_a_client_without_tls_is_refused_before_anything_changes(
    emu: RenderEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    plan: str,
    runs: str,
) -> None:
    app = make_app(emu, plan=plan)
    config = write_config(tmp_path / "work", app, strategy=strategy)
    fake = fake_client_without_tls(tmp_path / "pg-without-tls", "18.6")
    monkeypatch.setenv(PG_BIN_ENV, str(fake))
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "built without TLS support" in line and str(fake) in line, line
    assert app.snapshot() == untouched
    assert not (tmp_path / "work" / "backups").exists() or not any(
        (tmp_path / "work" / "backups").iterdir()
    )
