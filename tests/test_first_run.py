"""A newcomer's first run: mistakes in a copied config are errors, not silent answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from tests.test_rotation_support import (
    App,
    error_lines,
    make_app,
    report_of,
    run_cli,
    start_emulator,
    write_config,
)


@pytest.fixture(scope="module")
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    with start_emulator(pg) as emulator:
        yield emulator


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
