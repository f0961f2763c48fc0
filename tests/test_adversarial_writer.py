"""A client outside the freeze (its own connection, read-only turned off for its session)
commits a row to the old database at the last moment: while Render is asked to delete it.
No row may be lost: the guard seals the old database for its last check (rotation/sealing.py),
so the client is refused (it knows its row was not written): the database takes no session
but the rotation's until it is gone."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    execute,
    make_app,
    run_cli,
    write_config,
)


def _write_bypassing_the_fence(url: str) -> None:
    conn = psycopg2.connect(**PgURL.parse(url).psycopg2_kwargs(5))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        with conn, conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            cur.execute("INSERT INTO writes (note) VALUES ('late')")
    finally:
        conn.close()


@pytest.mark.usefixtures("no_faults_left")
@pytest.mark.parametrize("freeze", ["suspend", "readonly"])
@pytest.mark.parametrize(
    ("strategy", "plan"),
    [("auto", "free"), ("delete-first", "free"), ("create-first", PAID_PLAN)],
    ids=["auto-fallback", "delete-first", "create-first"],
)
def test_a_row_committed_as_the_old_database_is_deleted_is_not_lost(
    emu: RenderEmulator, tmp_path: Path, strategy: str, plan: str, freeze: str
) -> None:
    app = make_app(emu, plan=plan)
    config = write_config(tmp_path, app, strategy=strategy, freeze=freeze)
    committed: list[bool] = []
    refusals: list[str] = []

    def write(_method: str, _path: str) -> None:
        try:
            _write_bypassing_the_fence(app.external_url)
        except psycopg2.OperationalError as exc:  # the client is told: nothing was written
            refusals.append(str(exc))
            committed.append(False)
            return
        committed.append(True)

    emu.faults.on_request(write, method="DELETE", path_prefix=f"/postgres/{app.postgres_id}")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    ids = [pg["id"] for pg in app.databases()]
    # sealed for the last check until it is gone: the client could not connect, so it knows
    # its row was not written, and the rotation finished
    assert committed == [False], "a row was committed to the old database as it was deleted"
    assert "too many connections" in refusals[0], refusals
    assert result.exit_code == 0, result.output
    [new_id] = ids
    assert new_id != app.postgres_id
    url = emu.connection_info(new_id)["externalConnectionString"]
    assert execute(url, "SELECT count(*) FROM writes WHERE note = 'late'") == [(0,)]
