"""End-to-end rotations through the CLI, on the Render emulator with real PostgreSQL.

Both strategies (delete-first, reached by `auto` on the free plan, and create-first on a paid
plan) and every freeze mode but `none` rotate an app with a client writing rows right up to
the freeze; then the new database must hold exactly the old data plus every committed row,
every target key the new URL, one deploy per service live, and the old database be gone (or
kept with keep_old). Also: the daily no-op, the dry run, confirmation, status, and bad input.
"""

from __future__ import annotations

import fcntl
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from render_rotator import rotate
from render_rotator.cli import cli
from render_rotator.errors import UsageError
from render_rotator.render import RenderClient
from render_rotator.sandbox.emulator import RenderEmulator, expires_in
from tests.rotation_support import (
    PAID_PLAN,
    App,
    Writer,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    wait_for_rows,
    write_config,
)


def _status(emu: RenderEmulator, config: Path) -> list[dict]:
    result = run_cli(emu, "status", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    return report_of(result)["databases"]


def test_auto_on_free_plan_deletes_first_with_readonly_freeze(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="auto", freeze="readonly")
    before = inventory(app.external_url)
    untouched = app.snapshot()

    # the daily scheduled run: 30 days left, threshold 7 (from the config): a no-op
    noop = run_cli(emu, "rotate", "-c", str(config), "--if-expiring-within", "--json")
    assert noop.exit_code == 0, noop.output
    data = report_of(noop)
    assert data["due"] is False and data["rotated"] is False
    assert data["message"].startswith("not due: expires in 30.0 days (threshold 7)")
    assert app.snapshot() == untouched
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.json"))

    [entry] = _status(emu, config)
    assert entry["id"] == app.postgres_id and entry["current"] is True
    assert entry["due"] is False and entry["days_left"] == pytest.approx(30, abs=0.2)
    assert {t["target"] for t in entry["targets"]} == {
        f"{app.service_id}:DATABASE_URL",
        f"{app.service_id}:READ_URL",
        f"{app.env_group_id}:DATABASE_URL",
    }

    emu.set_expires_at(app.postgres_id, expires_in(3))
    assert _status(emu, config)[0]["due"] is True

    writer = Writer(app.external_url)
    writer.start()
    try:
        wait_for_rows(writer, 20)
        result = run_cli(
            emu, "rotate", "-c", str(config), "--if-expiring-within", "--yes", "--json"
        )
    finally:
        writer.stop()
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["strategy"] == "delete-first" and report["freeze"] == "readonly"
    assert "Render refused a second free database: used delete-first" in report["notes"]
    # the database itself refused the writes from the freeze on (the client saw it)
    assert any("read-only" in e for e in writer.errors), writer.errors[:3]
    assert len(writer.committed) >= 20
    info = assert_rotated(app, report, before, writer=writer, config=config)
    statuses = {p["name"]: p["status"] for p in report["phases"]}
    assert statuses["delete-old"] == "done" and statuses["retire"] == "skipped"
    assert report["freeze_seconds"] > 0

    # status finds the renamed database (<name>-YYYYMMDD) and who points at it
    [entry] = _status(emu, config)
    assert entry["id"] == report["new"]["id"]
    assert entry["postgres_name"] == f"{app.name}-{date.today():%Y%m%d}"
    assert entry["current"] is True and len(entry["targets"]) == 3
    assert entry["due"] is False and entry["rotation_in_progress"] is False
    # the new database takes writes
    execute(info["externalConnectionString"], "INSERT INTO writes (note) VALUES ('new')")


def test_create_first_on_paid_plan_with_suspend_freeze(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first", freeze="suspend")
    before = inventory(app.external_url)

    def suspended() -> bool:
        return emu.service(app.service_id)["suspended"] == "suspended"

    writer = Writer(app.external_url, frozen=suspended)
    writer.start()
    try:
        wait_for_rows(writer, 20)
        result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    finally:
        writer.stop()
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["strategy"] == "create-first" and report["freeze"] == "suspend"
    assert writer.stopped_by_freeze and writer.errors == []
    assert_rotated(app, report, before, writer=writer, config=config)
    statuses = {p["name"]: p["status"] for p in report["phases"]}
    assert statuses["delete-old"] == "skipped" and statuses["retire"] == "done"
    assert report["new"]["plan"] == PAID_PLAN and report["new"]["expires_at"] is None
    # the human report names the backup and the phases
    text = run_cli(emu, "status", "-c", str(config)).stdout
    assert report["new"]["id"] in text


def test_create_first_keep_old_with_maintenance_freeze(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(
        tmp_path, app, strategy="create-first", freeze="maintenance", keep_old=True
    )
    before = inventory(app.external_url)
    # keep_old: nothing is deleted, so no confirmation is needed even without --yes
    result = run_cli(emu, "rotate", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "rotated to dpg-" in result.stdout and "backup:  " in result.stdout
    state = sorted((tmp_path / "state").glob("*.json"))
    assert len(state) == 1 and ".journal." in state[0].name  # archived, finished
    run = run_cli(emu, "status", "-c", str(config), "--json")
    entries = report_of(run)["databases"]
    assert [e["current"] for e in entries] == [False, True]  # the kept one, then the new one
    new_id = entries[1]["id"]
    assert entries[1]["postgres_name"] == f"{app.name}-{date.today():%Y%m%d}"
    # the plain-text report carries the facts --json has
    for needle in (
        f"new:          {new_id}",
        "strategy:     create-first, freeze maintenance",
        "write freeze:",
        f"copied:       {before.total_rows:,} rows",
        f"note: kept the old database {app.postgres_id} (keep_old)",
        f"target:       {app.env_group_id}:DATABASE_URL: repointed",
    ):
        assert needle in result.stdout, needle
    info = emu.connection_info(new_id)
    assert app.env()["DATABASE_URL"] == info["internalConnectionString"]
    assert app.group_env()["DATABASE_URL"] == info["internalConnectionString"]
    assert [pg["id"] for pg in app.databases()] == [app.postgres_id, new_id]
    assert inventory(info["externalConnectionString"]).tables == before.tables
    # the kept old database is a usable fallback again (fence lifted)
    execute(app.external_url, "INSERT INTO writes (note) VALUES ('still writable')")
    assert app.emu.service(app.service_id)["serviceDetails"]["maintenanceMode"]["enabled"] is False
    assert len(app.api_deploys()) == 1
    # a second rotation later finds the new one as current and leaves the kept one alone
    dry = run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = report_of(dry)
    assert plan["old"]["id"] == new_id
    assert any(app.postgres_id in note for note in plan["notes"])


def test_dry_run_prints_the_plan_and_changes_nothing(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app)
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "dry run: nothing was changed" in out
    assert f"create {app.name}-{date.today():%Y%m%d} (plan free" in out
    assert f"DELETE {app.postgres_id} once every deploy is live" in out
    assert "if Render refuses a second free database: freeze, back up, DELETE" in out
    assert f"set {app.service_id}:READ_URL to the new external connection string" in out
    assert f"freeze writes: suspend ({app.service_id})" in out
    data = report_of(run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json"))
    assert data["dry_run"] is True and len(data["plan"]) >= 10
    assert app.snapshot() == untouched
    assert not (tmp_path / "state").exists() and not (tmp_path / "backups").exists()


def test_destructive_rotation_needs_yes_without_a_terminal(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app, strategy="delete-first")
    untouched = app.snapshot()
    result = run_cli(emu, "rotate", "-c", str(config))
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "not confirmed" in line and "no terminal" in line and "--yes" in line
    assert app.snapshot() == untouched
    assert not journal_file(config, app).exists()


# -- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idle_app(emu: RenderEmulator) -> App:
    return make_app(emu)


def _bad_config(directory: Path, app: App, case: str) -> Path:
    path = write_config(directory, app)
    text = path.read_text()
    if case == "unknown database":
        text = text.replace(f'name = "{app.name}"', 'name = "no-such-db"')
    elif case == "unknown service":
        text = text.replace(
            f'service = "{app.service_id}"', 'service = "srv-doesnotexist00000000"', 1
        )
    elif case == "target not pointing":
        text = text.replace('key = "READ_URL"', 'key = "PORT"')
    elif case == "malformed toml":
        text = text.replace("[[database]]", "[[database]", 1)
    elif case == "unknown key":
        text = text.replace("[defaults]", "[defaults]\nfreez = 'suspend'")
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "args", "env", "code", "needle"),
    [
        ("missing key", [], {"RENDER_API_KEY": None}, 2, "No Render API key: set RENDER_API_KEY"),
        ("wrong key", [], {"RENDER_API_KEY": "rnd_wrong"}, 1, "(401): unauthorized"),
        ("unknown database", [], {}, 2, "no Render database named 'no-such-db'"),
        (
            "unknown --database",
            ["--database", "nope"],
            {},
            2,
            'no [[database]] with name or id "nope"',
        ),
        ("unknown service", [], {}, 2, "service srv-doesnotexist00000000 (target"),
        ("target not pointing", [], {}, 2, ":PORT does not point at"),
        ("malformed toml", [], {}, 2, "invalid TOML"),
        ("unknown key", [], {}, 2, 'defaults.freez: unknown key; did you mean "freeze"?'),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    emu: RenderEmulator,
    idle_app: App,
    tmp_path: Path,
    case: str,
    args: list[str],
    env: dict[str, str | None],
    code: int,
    needle: str,
) -> None:
    config = _bad_config(tmp_path, idle_app, case)
    untouched = idle_app.snapshot()
    requests_before = len(emu.requests)
    for extra in ([], ["--json"]):
        result = run_cli(emu, "rotate", "-c", str(config), "--yes", *args, *extra, env=env)
        assert result.exit_code == code, result.output
        [line] = error_lines(result)
        assert needle in line, line
        if extra:
            assert report_of(result)["exit_code"] == code
    assert idle_app.snapshot() == untouched
    assert not journal_file(config, idle_app).exists()
    writes = [r for r in emu.requests[requests_before:] if r[0] != "GET"]
    assert writes == []


def test_a_concurrent_run_is_refused(emu: RenderEmulator, idle_app: App, tmp_path: Path) -> None:
    config = write_config(tmp_path, idle_app)
    lock = tmp_path / "state" / f"{idle_app.name}.journal.lock"
    lock.parent.mkdir()
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another rotate of the same database is running
        result = run_cli(emu, "rotate", "-c", str(config), "--yes")
        assert result.exit_code == 2, result.output
        [line] = error_lines(result)
        assert f"another render-rotator run is working on {idle_app.name}" in line
        assert run_cli(emu, "resume", "-c", str(config)).exit_code == 2
    # the lock died with its holder: the next run may go (here: a dry run would anyway)
    assert run_cli(emu, "rotate", "-c", str(config), "--dry-run").exit_code == 0


def test_the_library_asks_before_destroying(
    emu: RenderEmulator, idle_app: App, tmp_path: Path
) -> None:
    config = write_config(tmp_path, idle_app, strategy="create-first")
    untouched = idle_app.snapshot()
    questions: list[str] = []

    def refuse(question: str) -> bool:
        questions.append(question)
        return False

    with (
        RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client,
        pytest.raises(UsageError, match="not confirmed"),
    ):
        rotate(config, client=client, confirm=refuse)
    [question] = questions
    assert question.startswith(f"rotate {idle_app.name} will delete {idle_app.postgres_id}")
    assert question.endswith("once the new one is live. Continue?")
    assert idle_app.snapshot() == untouched
    assert not journal_file(config, idle_app).exists()


def test_demo_rotates_on_its_own_sandbox() -> None:
    """`render-rotator demo`: no account, no network, a whole rotation on a throwaway cluster."""
    result = CliRunner().invoke(
        cli,
        ["demo", "--rows", "300", "--json"],
        env={"RENDER_API_KEY": None, "RENDER_API_URL": None, "RENDER_ROTATOR_CONFIG": None},
    )
    assert result.exit_code == 0, result.output
    report = report_of(result)
    assert report["rotated"] is True and report["strategy"] == "delete-first"
    assert report["rows_copied"] == 300
    assert "Render refused a second free database: used delete-first" in report["notes"]
    assert report["new"]["name"] == f"myapp-db-{date.today():%Y%m%d}"
    assert [t["status"] for t in report["targets"]] == ["repointed", "repointed"]
    assert [d["status"] for d in report["deploys"]] == ["live"]
    assert Path(report["backup"]["path"]).exists()
