"""The old database sealed for its last drift check and deletion (rotation/sealing.py), on the
Render emulator with real PostgreSQL: a session the owner cannot end makes the guard refuse
(the old database kept), and every way back onto the old database puts its connection limit
back: a failed DELETE, and `resume` after a run killed while it was sealed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from render_rotator.postgres.seal import SealedDatabase, open_sealed
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    App,
    error_lines,
    execute,
    journal_file,
    make_app,
    run_cli,
    subprocess_env,
    write_config,
)

#: the limit the user set on the old database before the rotation: what must come back
USERS_LIMIT = 50


@pytest.fixture(autouse=True)
def _no_faults(emu: RenderEmulator) -> Iterator[None]:
    emu.faults.clear()
    yield
    emu.faults.clear()


def _dbname(app: App) -> str:
    return PgURL.parse(app.external_url).dbname


def _limit(cluster: Cluster, app: App) -> int:
    rows = cluster.query(f"SELECT datconnlimit FROM pg_database WHERE datname = '{_dbname(app)}'")
    return int(str(rows[0][0]))


def _app_with_limit(emu: RenderEmulator, plan: str = "free") -> App:
    app = make_app(emu, plan=plan, rows=50)
    emu.cluster.execute(f'ALTER DATABASE "{_dbname(app)}" CONNECTION LIMIT {USERS_LIMIT}')
    return app


def _can_write(app: App) -> None:
    """The app's role connects and writes to the old database again (past the fence a
    cutover leaves on it: this is about connecting)."""
    conn = psycopg2.connect(**PgURL.parse(app.external_url).psycopg2_kwargs(5))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            cur.execute("INSERT INTO writes (note) VALUES ('after')")
    finally:
        conn.close()


# -- the seal itself, on PostgreSQL 15 and 18 -------------------------------------------------


@pytest.mark.parametrize("major", [15, 18])
def test_a_sealed_database_takes_no_session_but_ours(
    request: pytest.FixtureRequest, major: int
) -> None:
    cluster: Cluster = request.getfixturevalue(f"pg{major}")
    name = f"s_{uuid.uuid4().hex[:8]}"
    cluster.create_owned_database(name, name, "pw-" + name)
    owner = cluster.url(name, name, "pw-" + name)
    before = psycopg2.connect(**PgURL.parse(owner).psycopg2_kwargs(5))  # the app's session
    # the platform's superuser session (monitoring on Render): not the app's, not counted
    platform = psycopg2.connect(**PgURL.parse(cluster.url(name)).psycopg2_kwargs(5))
    sealed: SealedDatabase = open_sealed(owner, sessions=2)
    try:
        assert sealed.previous_limit == -1
        sealed.seal()
        assert sealed.end_others(wait=10) == []
        assert before.closed or _ended(before)
        assert not _ended(platform)  # left alone, and no reason to keep the database
        with pytest.raises(psycopg2.OperationalError, match="too many connections"):
            psycopg2.connect(**PgURL.parse(owner).psycopg2_kwargs(5))
        sealed.confirm_alone()
        superuser = cluster.query("SELECT 1", dbname=name)  # superusers are not limited
        assert superuser == [(1,)]
        sealed.restore()
        execute(owner, "SELECT 1")  # open again
        assert cluster.query(f"SELECT datconnlimit FROM pg_database WHERE datname = '{name}'") == [
            (-1,)
        ]
    finally:
        sealed.close()
        before.close()
        platform.close()
        cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ended(conn: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.Error:
        return True
    return False


# -- a session of another role ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "plan"), [("delete-first", "free"), ("create-first", PAID_PLAN)]
)
def test_a_session_the_owner_cannot_end_keeps_the_old_database(
    emu: RenderEmulator, tmp_path: Path, strategy: str, plan: str
) -> None:
    app = _app_with_limit(emu, plan)
    role = f"reporting_{uuid.uuid4().hex[:6]}"
    emu.cluster.create_role(role, "pw-reporting")
    emu.cluster.execute(f'GRANT CONNECT ON DATABASE "{_dbname(app)}" TO "{role}"')
    url = PgURL.parse(app.external_url)
    other = psycopg2.connect(
        **PgURL(url.host, url.port, url.dbname, role, "pw-reporting", url.params).psycopg2_kwargs(5)
    )
    try:
        config = write_config(tmp_path, app, strategy=strategy, freeze="suspend")
        result = run_cli(emu, "rotate", "-c", str(config), "--yes")
        assert result.exit_code == 1, result.output
        text = " ".join(error_lines(result)) or result.output
        assert f"refusing to delete the old database {app.postgres_id}" in text
        assert role in text and "cannot be ended" in text
        assert app.postgres_id in [pg["id"] for pg in app.databases()]  # kept
        assert _limit(emu.cluster, app) == USERS_LIMIT  # the seal lifted
        with other.cursor() as cur:  # still there: nothing ended it
            cur.execute("SELECT 1")
    finally:
        other.close()
    _can_write(app)


# -- a failed DELETE ------------------------------------------------------------------------


def test_a_refused_delete_lifts_the_seal(emu: RenderEmulator, tmp_path: Path) -> None:
    app = _app_with_limit(emu)
    sealed_at_delete: list[int] = []
    emu.faults.on_request(
        lambda _m, _p: sealed_at_delete.append(_limit(emu.cluster, app)),
        method="DELETE",
        path_prefix=f"/postgres/{app.postgres_id}",
    )
    emu.faults.client_error(
        status=409,
        message="database is busy",
        method="DELETE",
        path_prefix=f"/postgres/{app.postgres_id}",
    )
    config = write_config(tmp_path, app, strategy="delete-first")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1, result.output
    assert sealed_at_delete == [3]  # the fingerprint's three sessions, and no room for more
    assert app.postgres_id in [pg["id"] for pg in app.databases()]
    assert _limit(emu.cluster, app) == USERS_LIMIT
    _can_write(app)


# -- killed while sealed, then resumed --------------------------------------------------------


def _rotate_killed_at_delete(
    emu: RenderEmulator, app: App, config: Path, signum: int = signal.SIGKILL
) -> dict[str, Any]:
    """Run the CLI; send it `signum` while Render is asked to delete the old database
    (sealed by then), and refuse that DELETE so the database stays; returns the journal
    after."""
    env = subprocess_env(emu)
    log = config.parent / "rotate-killed-sealed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )

        def kill(_method: str, _path: str) -> None:
            if signum == signal.SIGKILL:
                os.killpg(proc.pid, signum)
                proc.wait(timeout=10)
            else:
                proc.send_signal(signum)  # answered below: the DELETE is refused

        prefix = f"/postgres/{app.postgres_id}"
        emu.faults.on_request(kill, method="DELETE", path_prefix=prefix)
        emu.faults.client_error(status=409, message="busy", method="DELETE", path_prefix=prefix)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    expected = -signal.SIGKILL if signum == signal.SIGKILL else 1
    assert proc.returncode == expected, log.read_text()
    # the CLI may be dead before the emulator answered that DELETE: the refusal must have
    # been taken before the faults are cleared, or the DELETE goes through after all
    deadline = time.monotonic() + 10
    while emu.faults.describe()["rules"]:
        assert time.monotonic() < deadline, "the DELETE was never answered"
        time.sleep(0.01)
    emu.faults.clear()
    path = journal_file(config, app)
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def _sessions_gone(cluster: Cluster, app: App) -> None:
    """The killed run's sessions end with it (the server sees the socket close)."""
    deadline = time.monotonic() + 10
    query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{_dbname(app)}'"
    while cluster.query(query) != [(0,)]:
        assert time.monotonic() < deadline, "the killed run's sessions are still there"
        time.sleep(0.05)


def test_resume_after_a_kill_while_sealed_lifts_the_seal_first(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = _app_with_limit(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    journal = _rotate_killed_at_delete(emu, app, config)
    assert journal["state"]["sealed"]["previous_limit"] == USERS_LIMIT
    assert journal["state"]["sealed"]["old_id"] == app.postgres_id
    assert _limit(emu.cluster, app) == 3  # left sealed by the dead run
    _sessions_gone(emu.cluster, app)

    # resume, with the DELETE refused once more: the limit seen at each request shows the
    # dead run's seal lifted right after the resumed run took the lease, then this run's own
    # seal for its DELETE, then the user's limit again once it lands back on the old database
    seen: list[tuple[str, int]] = []
    emu.faults.on_request(lambda m, _p: seen.append((m, _limit(emu.cluster, app))), n=None)
    emu.faults.client_error(
        status=409, message="busy", method="DELETE", path_prefix=f"/postgres/{app.postgres_id}"
    )
    result = run_cli(emu, "resume", "-c", str(config))
    assert result.exit_code == 1, result.output
    deletes = [i for i, (method, _) in enumerate(seen) if method == "DELETE"]
    assert [seen[i][1] for i in deletes] == [3]
    before = [limit for _, limit in seen[: deletes[0]]]
    assert before[0] == 3 and USERS_LIMIT in before, before
    assert app.postgres_id in [pg["id"] for pg in app.databases()]
    assert _limit(emu.cluster, app) == USERS_LIMIT
    _can_write(app)


def test_restart_after_a_kill_while_sealed_lifts_the_seal(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """`rotate --restart` discards the journal that knew the limit: it lifts the seal before
    the new rotation reads the limit to put back."""
    app = _app_with_limit(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    _rotate_killed_at_delete(emu, app, config)
    assert _limit(emu.cluster, app) == 3
    emu.faults.client_error(
        status=409, message="busy", method="DELETE", path_prefix=f"/postgres/{app.postgres_id}"
    )
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--restart")
    assert result.exit_code == 1, result.output
    assert app.postgres_id in [pg["id"] for pg in app.databases()]
    assert _limit(emu.cluster, app) == USERS_LIMIT
    _can_write(app)


def test_resume_after_a_kill_while_sealed_completes(emu: RenderEmulator, tmp_path: Path) -> None:
    app = _app_with_limit(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    _rotate_killed_at_delete(emu, app, config)
    assert _limit(emu.cluster, app) == 3
    result = run_cli(emu, "resume", "-c", str(config))
    assert result.exit_code == 0, result.output
    [pg] = app.databases()
    assert pg["id"] != app.postgres_id
    url = emu.connection_info(pg["id"])["externalConnectionString"]
    assert execute(url, "SELECT count(*) FROM writes") == [(0,)]


def test_sigterm_while_sealed_lifts_the_seal(emu: RenderEmulator, tmp_path: Path) -> None:
    """A cancelled CI job (SIGTERM) while Render is asked to delete the old database: the
    run lands back on it, its limit as it was, nothing left sealed in the journal."""
    app = _app_with_limit(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    _rotate_killed_at_delete(emu, app, config, signal.SIGTERM)
    assert app.postgres_id in [pg["id"] for pg in app.databases()]
    assert _limit(emu.cluster, app) == USERS_LIMIT
    archived = list((config.parent / "state").glob("**/*.json"))
    assert archived and all(
        "sealed" not in json.loads(p.read_text()).get("state", {}) for p in archived
    )
    _can_write(app)


def test_a_fresh_machine_after_a_kill_while_sealed_lifts_the_seal_and_finishes(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """No journal (a new runner, the state dir lost): the dead run's lease on the old
    database says it was sealed and what its limit was, so the next run puts it back
    before it needs more sessions than the seal left (its backup would fail with "too
    many connections") and finishes the rotation."""
    app = _app_with_limit(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    _rotate_killed_at_delete(emu, app, config)
    assert _limit(emu.cluster, app) == 3
    _sessions_gone(emu.cluster, app)
    shutil.rmtree(tmp_path / "state")
    seen: list[tuple[str, int]] = []
    emu.faults.on_request(
        lambda m, p: seen.append((m, _limit(emu.cluster, app))),
        method="DELETE",
        path_prefix=f"/postgres/{app.postgres_id}",
    )
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 0, result.output
    assert seen == [("DELETE", 3)]  # sealed again by this run, for its own deletion
    [pg] = app.databases()
    assert pg["id"] != app.postgres_id
    url = emu.connection_info(pg["id"])["externalConnectionString"]
    assert execute(url, "SELECT count(*) FROM writes") == [(0,)]
