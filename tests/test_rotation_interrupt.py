"""Ctrl-C or SIGTERM (a cancelled CI job) before the cutover lands like any failure: the app
runs again on its old database, nothing is left behind, and the message says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import execute, make_app, write_config

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_backup_thaws_the_app_and_keeps_the_old_database(
    emu: RenderEmulator, tmp_path: Path, sig: signal.Signals
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="auto", freeze="suspend")
    # a session holding a table lock: pg_dump waits for it, so the backup is caught mid-way
    holder = psycopg2.connect(
        **PgURL.parse(app.external_url + "?sslmode=require").psycopg2_kwargs(10)
    )
    holder.autocommit = False
    with holder.cursor() as cur:
        cur.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = 'public' ORDER BY 1 LIMIT 1"
        )
        (table,) = cur.fetchone()
        cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    env = {**os.environ, "RENDER_API_URL": emu.base_url, "RENDER_API_KEY": emu.api_key}
    env.pop("GITHUB_ACTIONS", None)
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
        deadline = time.monotonic() + 60
        while execute(app.external_url + "?sslmode=require", waiting)[0][0] == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pg_dump never waited for the lock"
            time.sleep(0.05)
        assert emu.service(app.service_id)["suspended"] == "suspended"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        holder.rollback()
        holder.close()
    print(err)
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert "interrupted in phase backup" in report["message"]
    assert "still in use" in report["message"]
    assert emu.service(app.service_id)["suspended"] == "not_suspended"
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id]
    assert _children(proc.pid) == []  # no pg_dump left running
