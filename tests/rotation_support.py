"""Shared helpers for the rotation tests (a plain module, so pytest collects nothing here):
a seeded app on the Render emulator, configs, the CLI, a client writing rows during the
rotation, a CLI killed at a phase boundary, and the final-state checks.

Everything is real: the emulator serves HTTP on 127.0.0.1 and provisions real databases on a
real PostgreSQL cluster; the CLI is the one users run; data is compared by exact inventories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from click.testing import CliRunner, Result

from render_rotator.cli import cli
from render_rotator.postgres.archive import sha256_path
from render_rotator.postgres.inventory import Inventory, compare_inventories, take_inventory
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.sandbox.seed import create_postgres, load_sample_data

REPO = Path(__file__).resolve().parent.parent  # on PYTHONPATH for child CLIs
DONE = ("done", "skipped")


PAID_PLAN = "basic_256mb"
READ_URL_QUERY = "sslmode=require&application_name=rotator%20test"  # as users paste it


#: seconds a new database stays ``creating`` and a deploy stays in progress: long enough that
#: the rotation meets them waiting (and a run killed "in provision" or "in deploy" is killed
#: inside the wait), short enough not to cost much
EMULATOR_DELAY = 0.1


@contextlib.contextmanager
def start_emulator(cluster: Cluster, delay: float = EMULATOR_DELAY) -> Iterator[RenderEmulator]:
    with RenderEmulator(cluster, provision_delay=delay, deploy_delay=delay) as emu:
        yield emu


@dataclass
class App:
    """A seeded app on the emulator: one database (in its own workspace) with sample data,
    a web service and an env group pointing at it."""

    emu: RenderEmulator
    owner_id: str
    name: str
    plan: str
    postgres_id: str
    service_id: str
    env_group_id: str
    internal_url: str = field(repr=False)
    external_url: str = field(repr=False)
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        return self.emu.env_vars(self.service_id)

    def group_env(self) -> dict[str, str]:
        return self.emu.env_group_vars(self.env_group_id)

    def databases(self) -> list[dict[str, Any]]:
        """This workspace's databases, oldest first."""
        snap = self.emu.state_snapshot()["postgres"]
        return [pg for pg in snap.values() if pg["owner"]["id"] == self.owner_id]

    def api_deploys(self) -> list[dict[str, Any]]:
        """Deploys the rotation triggered (newest first)."""
        return [d for d in self.emu.deploys(self.service_id) if d["trigger"] == "api"]

    def snapshot(self) -> dict[str, Any]:
        """Everything of this app that a rotation could change."""
        svc = self.emu.service(self.service_id)
        return {
            "databases": [(pg["id"], pg["name"], pg["status"]) for pg in self.databases()],
            "env": self.env(),
            "group": self.group_env(),
            "suspended": svc["suspended"],
            "maintenance": svc["serviceDetails"]["maintenanceMode"]["enabled"],
            "deploys": [d["id"] for d in self.emu.deploys(self.service_id)],
        }


def make_app(emu: RenderEmulator, *, plan: str = "free", rows: int = 200) -> App:
    owner = emu.add_owner(f"ws-{uuid.uuid4().hex[:6]}")
    name = f"app-{uuid.uuid4().hex[:8]}"
    pg = create_postgres(emu, name, owner, plan=plan)
    info = emu.connection_info(pg["id"])
    external, internal = info["externalConnectionString"], info["internalConnectionString"]
    load_sample_data(external, rows)
    execute(external, "CREATE TABLE writes (id bigserial PRIMARY KEY, note text NOT NULL)")
    service_id = emu.add_service(
        f"{name}-web",
        owner,
        {"DATABASE_URL": internal, "READ_URL": f"{external}?{READ_URL_QUERY}", "PORT": "10000"},
    )
    group_id = emu.add_env_group(
        f"{name}-env", owner, {"DATABASE_URL": internal, "APP_ENV": "production"}, [service_id]
    )
    return App(
        emu, owner, name, plan, pg["id"], service_id, group_id, internal, external,
        info["password"],
    )  # fmt: skip


def write_config(directory: Path, app: App, **settings: Any) -> Path:
    """A config for `app`; `settings` override [defaults] (strings, bools, numbers)."""
    defaults: dict[str, Any] = {
        "strategy": "auto",
        "freeze": "suspend",
        "backup_dir": "backups",
        "state_dir": "state",
        "jobs": 2,
        "connect_timeout": 10,
        "command_timeout": 60,
        "provision_timeout": 60,
        "deploy_timeout": 60,
        "rotate_within_days": 7,
    }
    defaults.update(settings)
    lines = ["[render]", f'owner_id = "{app.owner_id}"', "", "[defaults]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in defaults.items()]
    lines += [
        "",
        "[[database]]",
        f'name = "{app.name}"',
        "",
        "  [[database.target]]",
        f'  service = "{app.service_id}"',
        '  key = "DATABASE_URL"',
        "",
        "  [[database.target]]",
        f'  service = "{app.service_id}"',
        '  key = "READ_URL"',
        '  connection = "external"',
        "",
        "  [[database.target]]",
        f'  env_group = "{app.env_group_id}"',
        '  key = "DATABASE_URL"',
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "render-rotator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_env(emu: RenderEmulator) -> dict[str, str | None]:
    return {
        "RENDER_API_URL": emu.base_url,
        "RENDER_API_KEY": emu.api_key,
        "RENDER_ROTATOR_CONFIG": None,
        "GITHUB_ACTIONS": None,
    }


def subprocess_env(emu: RenderEmulator) -> dict[str, str]:
    """The environment of `python -m render_rotator` run as its own process against `emu`."""
    env = {**os.environ, "RENDER_API_URL": emu.base_url, "RENDER_API_KEY": emu.api_key}
    env["PYTHONPATH"] = str(REPO)
    for key in ("GITHUB_ACTIONS", "RENDER_ROTATOR_CONFIG"):
        env.pop(key, None)
    return env


def run_cli(emu: RenderEmulator, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """`render-rotator ARGS` in-process (click's runner: no terminal on stdin)."""
    return CliRunner().invoke(cli, list(args), env={**cli_env(emu), **(env or {})})


def report_of(result: Result) -> dict[str, Any]:
    """The one JSON object `--json` prints on stdout."""
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON object: {result.output}") from exc
    return data


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def execute(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(**PgURL.parse(url).psycopg2_kwargs(10))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def inventory(url: str) -> Inventory:
    return take_inventory(url, connect_timeout=10, statement_timeout=60)


def connection_info(emu: RenderEmulator, postgres_id: str) -> dict[str, str]:
    return emu.connection_info(postgres_id)


class Writer(threading.Thread):
    """A client inserting rows into the old database as fast as it can, recording every
    insert that committed. It stops when told, or when `frozen()` says its service is frozen
    (a real app stops when Render suspends it; this thread would not)."""

    def __init__(self, url: str, frozen: Callable[[], bool] | None = None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frozen = frozen
        self.committed: list[int] = []
        self.errors: list[str] = []
        self.stopped_by_freeze = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = None
        n = 0
        while not self._stop_event.is_set():
            if self.frozen is not None and self.frozen():
                self.stopped_by_freeze = True
                break
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(**PgURL.parse(self.url).psycopg2_kwargs(5))
                with conn, conn.cursor() as cur:
                    n += 1
                    cur.execute("INSERT INTO writes (note) VALUES (%s) RETURNING id", (f"w{n}",))
                    row = cur.fetchone()
                assert row is not None
                self.committed.append(int(row[0]))  # the commit above succeeded
            except psycopg2.Error as exc:
                self.errors.append(type(exc).__name__ + ": " + str(exc).strip().splitlines()[0])
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def wait_for_rows(writer: Writer, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(writer.committed) < count:
        assert time.monotonic() < deadline, f"writer wrote only {len(writer.committed)} rows"
        time.sleep(0.01)


def assert_rotated(
    app: App,
    report: dict[str, Any],
    before: Inventory,
    *,
    keep_old: bool = False,
    writer: Writer | None = None,
    config: Path | None = None,
) -> dict[str, str]:
    """The end state of a successful rotation; returns the new database's connection info."""
    emu = app.emu
    assert report["ok"] is True and report["rotated"] is True, report
    new_id = report["new"]["id"]
    assert new_id != app.postgres_id
    ids = [pg["id"] for pg in app.databases()]
    # exactly one new database; the old one gone (or kept with keep_old)
    assert ids == ([app.postgres_id, new_id] if keep_old else [new_id]), ids
    new = emu.postgres(new_id)
    assert new["status"] == "available"
    assert new["plan"] == app.plan
    info = emu.connection_info(new_id)
    # every target key now holds the new URL; nothing else changed
    env = app.env()
    assert env["DATABASE_URL"] == info["internalConnectionString"]
    assert env["READ_URL"] == f"{info['externalConnectionString']}?{READ_URL_QUERY}"
    assert env["PORT"] == "10000"
    group = app.group_env()
    assert group == {"DATABASE_URL": info["internalConnectionString"], "APP_ENV": "production"}
    # one deploy per service went live, and the service runs (not frozen)
    deploys = app.api_deploys()
    assert len(deploys) == 1 and deploys[0]["status"] == "live", deploys
    # ... asked for as deploy_only: the last build with the new env vars, no new code
    bodies = emu.deploy_requests(app.service_id)
    assert bodies and all(b == {"deployMode": "deploy_only"} for b in bodies), bodies
    svc = emu.service(app.service_id)
    assert svc["suspended"] == "not_suspended"
    assert svc["serviceDetails"]["maintenanceMode"]["enabled"] is False
    # the new database holds exactly the old data
    after = inventory(info["externalConnectionString"])
    comparison = compare_inventories(before, after)
    if writer is None:
        assert comparison.equal, comparison.differences
    else:
        # ... plus every row the client committed before the freeze, and nothing else
        only_writes = [d for d in comparison.differences if "writes" not in d]
        assert only_writes == [], comparison.differences
        rows = execute(info["externalConnectionString"], "SELECT id FROM writes ORDER BY id")
        assert [r[0] for r in rows] == sorted(writer.committed)
        assert report["rows_copied"] == before.total_rows + len(writer.committed)
    if writer is None:
        assert report["rows_copied"] == before.total_rows
    assert report["bytes_copied"] and report["bytes_copied"] > 0
    # the verified backup is on disk, as reported
    backup = Path(report["backup"]["path"])
    assert backup.exists() and sha256_path(backup) == report["backup"]["sha256"]
    assert report["old"]["id"] == app.postgres_id
    names = [p["name"] for p in report["phases"]]
    assert names[0] == "inspect" and names[-1] == "report"
    assert all(p["status"] in ("done", "skipped") for p in report["phases"]), report["phases"]
    if keep_old:
        # kept as a usable fallback: writable again
        old_url = emu.connection_info(app.postgres_id)["externalConnectionString"]
        execute(old_url, "INSERT INTO writes (note) VALUES ('after')")
    if config is not None:
        assert_journal_clean(config, app)
    return info


def assert_journal_clean(config: Path, app: App) -> None:
    """No unfinished journal, and no secret in anything the rotation wrote there."""
    state = config.parent / "state"
    journals = sorted(state.glob("*.journal.json")) if state.exists() else []
    assert journals == [], "an unfinished journal was left"
    secrets = [app.password, app.emu.api_key]
    for pg in app.databases():
        secrets.append(app.emu.connection_info(pg["id"])["password"])
    for path in state.rglob("*") if state.exists() else []:
        if path.is_file():
            text = path.read_text(errors="replace")
            for secret in secrets:
                assert secret not in text, f"secret in {path}"
            assert not re.search(r"://[^\s/@\"]*:[^\s@\"]+@", text), f"URL with password in {path}"


def journal_file(config: Path, app: App) -> Path:
    return config.parent / "state" / f"{app.name}.journal.json"


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def rotate_and_kill(
    emu: RenderEmulator,
    app: App,
    config: Path,
    phase: str,
    statuses: tuple[str, ...],
    attempt: int = 1,
) -> dict[str, Any]:
    """Run `python -m render_rotator rotate` and SIGKILL it as soon as the journal shows
    `phase` in one of `statuses` (in its `attempt`-th run: auto's fallback runs provision
    twice); returns the journal as it was at that moment."""
    env = subprocess_env(emu)
    journal = journal_file(config, app)
    log = config.parent / f"rotate-killed-at-{phase}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "render_rotator", "rotate", "-c", str(config), "--yes"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    data = json.loads(journal.read_text())
                except (FileNotFoundError, ValueError):
                    data = None
                entry = data["phases"].get(phase, {}) if data else {}
                if entry.get("status") in statuses and entry.get("attempts", 0) >= attempt:
                    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pg_dump/pg_restore
                    proc.wait(timeout=10)
                    return data
                if proc.poll() is not None:
                    raise AssertionError(
                        f"rotate ended ({proc.returncode}) before {phase} reached {statuses}:\n"
                        + log.read_text()
                    )
                assert time.monotonic() < deadline, "rotate took too long"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
