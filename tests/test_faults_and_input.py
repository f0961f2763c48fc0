"""Faults and hostile input: every case ends in a safe, stated state and leaks no secret.

Each case checks the exit code, the one error line (what is wrong and what to do), that
Render (the emulator) is exactly as before, and that no secret appears in any output, file,
argv or child environment. Disk-full cases use a real full file system: a small tmpfs,
mounted by the test (root only; elsewhere they are skipped, saying why).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from click.testing import Result

from render_rotator import faults, secrets
from render_rotator.errors import InvalidURLError, MissingAPIKeyError
from render_rotator.postgres import passfiles
from render_rotator.postgres.runner import last_error_line, spawn
from render_rotator.postgres.url import PgURL
from render_rotator.render import RenderClient
from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    DONE,
    PAID_PLAN,
    App,
    assert_rotated,
    error_lines,
    execute,
    inventory,
    journal_file,
    make_app,
    report_of,
    rotate_and_kill,
    run_cli,
    write_config,
)

# A password as users paste it: every character that breaks a URL, unencoded.
HOSTILE_PASSWORDS = ["p@ss:w/rd%", "Xq?Zk Wv#R1", "Xq Zk/Wv@Rb?x=1", "s3cr:Et@hXst", "Xq%zz@Wv"]


def fragments(password: str) -> list[str]:
    """The password and every tail of it that a naive parser could print (after an @, :, /,
    ?, # or space), down to 3 characters."""
    tails = [password[i + 1 :] for i, c in enumerate(password) if c in "@:/?# %"]
    return [password, *(t for t in tails if len(t) >= 3)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """`small_disk(kib)`: a real tmpfs of that size, unmounted afterwards."""
    mounts: list[Path] = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(  # noqa: S603 - fixed argv
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0777", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"a full disk needs a small tmpfs, and mount refused: {done.stderr}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)  # noqa: S603, S607


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system of `directory`, leaving about `leave` bytes free."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def all_text(result: Result, *roots: Path) -> str:
    """Everything a run showed or wrote: stdout, stderr and every file under `roots`."""
    parts = [result.stdout, result.stderr]
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file() and path.name != "filler":
                with contextlib.suppress(OSError):
                    parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def assert_no_secret(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, f"secret {value[:3]}... leaked"
    assert not re.search(r"postgres(ql)?://[^\s/@:\"']*:(?!\*\*\*@)[^\s@\"']+@", text), text


def app_secrets(app: App) -> list[str]:
    values = [app.password, app.emu.api_key]
    for pg in app.databases():
        values.append(app.emu.connection_info(pg["id"])["password"])
    return values


def one_error(result: Result) -> str:
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output, result.output
    return lines[0]


# -- secrets: URL parsing, API keys, child processes ------------------------------------------


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_url_errors_never_show_an_unencoded_password(password: str) -> None:
    for url in (
        f"postgresql://app:{password}@db.example.com:5432/app",
        f"postgresql://app:{password}@db.example.com:notaport/app",
        f"mysql://app:{password}@db.example.com/app",
        f"postgresql://app:{password}@/app",
    ):
        try:
            parsed = PgURL.parse(url)
        except InvalidURLError as exc:
            message = str(exc)
            for piece in fragments(password):
                assert piece not in message, message
            assert "percent-encode" in message or "postgresql://" in message
        else:
            # parsed: then the password is wholly the password, and never printed
            assert parsed.password is not None
            assert password not in parsed.redacted() + parsed.public_url()


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_cli_errors_never_show_the_password(emu: RenderEmulator, password: str) -> None:
    url = f"postgresql://app:{password}@127.0.0.1:1/app"
    result = run_cli(emu, "verify", "--connect-timeout", "1", env={
        "RENDER_ROTATOR_SOURCE_URL": url, "RENDER_ROTATOR_TARGET_URL": url,
    })  # fmt: skip
    # unparseable (exit 2, saying how to encode it), or parsed and nothing listening (exit 1)
    assert result.exit_code in (1, 2), result.output
    assert "percent-encode" in result.output or "cannot connect" in result.output
    for piece in fragments(password):
        assert piece not in result.output, result.output


def test_a_password_in_the_query_string_goes_to_the_passfile_only() -> None:
    url = PgURL.parse("postgresql://app@db.example.com/app?sslmode=require&password=Tr%26cky99")
    assert url.password == "Tr&cky99"
    assert ("password", "Tr&cky99") not in url.params
    for shown in (url.redacted(), url.public_url(), repr(url)):
        assert "Tr&cky99" not in shown and "Tr%26cky99" not in shown
    assert url.psycopg2_kwargs()["password"] == "Tr&cky99"
    assert "sslmode=require" in url.public_url()
    assert secrets.scrub("postgresql://a@h/d?sslmode=require&password=Tr%26cky99") == (
        "postgresql://a@h/d?sslmode=require&password=***"
    )


def test_a_password_in_the_query_string_works_and_is_never_shown(
    emu: RenderEmulator, pg: Cluster, tmp_path: Path
) -> None:
    role = f"r_{uuid.uuid4().hex[:8]}"
    password = "Qp" + uuid.uuid4().hex[:10]
    pg.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    base = pg.url("postgres", user=role)
    url = PgURL.parse(base).public_url(password=password)  # ?password= in the query
    result = run_cli(
        emu, "-v", "backup", str(tmp_path / "out.dump"), "--json",
        env={"RENDER_ROTATOR_SOURCE_URL": url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_no_secret(all_text(result, tmp_path), password)


@pytest.mark.parametrize("key", ["rnd_abc\ndef", "rnd_abc\x1b[31mdef", "rnd_a\tbc"])
def test_an_api_key_with_control_characters_is_refused_without_printing_it(
    emu: RenderEmulator, tmp_path: Path, key: str
) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        RenderClient(api_key=key, base_url=emu.base_url)
    assert "rnd_abc" not in str(caught.value) and "def" not in str(caught.value)
    app = make_app(emu)
    config = write_config(tmp_path, app)
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", env={"RENDER_API_KEY": key})
    assert result.exit_code == 2, result.output
    line = one_error(result)
    assert "API key contains a character" in line and "copy the key again" in line
    assert "rnd_a" not in result.output
    assert emu.state_snapshot() == before


def settled_exec(pid: int) -> tuple[list[bytes], bytes]:
    """The child's environment and argv once exec has finished.

    Popen returns when the exec closes its error pipe, which the kernel does before it lays
    out the new program's environment: reading /proc at once can see an empty one.
    """
    for _ in range(1000):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        if environ and argv.startswith(b"sleep\0"):
            return environ.split(b"\0"), argv
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never finished exec")


def test_child_processes_get_a_minimal_environment_and_a_private_passfile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "Zq" + uuid.uuid4().hex
    url = PgURL.parse(f"postgresql://app:{password}@127.0.0.1:5/app")
    monkeypatch.setenv("RENDER_API_KEY", "rnd_" + uuid.uuid4().hex)
    monkeypatch.setenv("RENDER_ROTATOR_SOURCE_URL", url.url())
    monkeypatch.setenv("RENDER_ROTATOR_TARGET_URL", url.url())
    monkeypatch.setenv("PGPASSWORD", password)
    monkeypatch.setenv("PGSSLROOTCERT", "/nonexistent/root.crt")
    with spawn(["sleep", "30"], urls=[url]) as (proc, _):
        environ, argv = settled_exec(proc.pid)
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        passfile = Path(env["PGPASSFILE"])
        assert passfile.stat().st_mode & 0o777 == 0o600
        assert passfile.parent.stat().st_mode & 0o777 == 0o700
        assert passfile.parent.name.startswith(f"render-rotator-{os.getpid()}-")
        assert password in passfile.read_text()  # the one place it is
        proc.send_signal(signal.SIGTERM)
    assert not passfile.exists()
    assert not any(k.startswith(("RENDER_API", "RENDER_ROTATOR")) for k in env), sorted(env)
    assert "PGPASSWORD" not in env and env["PGSSLROOTCERT"] == "/nonexistent/root.crt"
    assert password.encode() not in b"\0".join(environ) + argv


def test_private_directories_of_killed_runs_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])  # noqa: S603, S607
    dead.wait()
    stale = tmp_path / f"render-rotator-{dead.pid}-abcd"
    stale.mkdir()
    (stale / "x.pgpass").write_text("h:5432:*:u:secret\n")
    live = tmp_path / f"render-rotator-{os.getppid()}-efgh"
    live.mkdir()
    other = tmp_path / "render-rotator-demo-1234"
    other.mkdir()
    assert passfiles.sweep_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_an_object_the_database_user_cannot_read_is_named_in_one_line(
    pg: Cluster, fresh_db: str
) -> None:
    role = f"r_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'Pw{role}'")
    execute(fresh_db, "CREATE TABLE hidden (id int)")
    url = PgURL.parse(fresh_db)
    as_role = PgURL(url.host, url.port, url.dbname, role, f"Pw{role}")
    try:
        execute(as_role.url(), "SELECT count(*) FROM hidden")
    except psycopg2.Error as exc:
        error = faults.as_error(exc)
    else:
        raise AssertionError("the role could read the table")
    assert str(error).startswith("PostgreSQL refused: permission denied for table hidden")
    assert "grant the database user read access" in str(error)
    assert "\n" not in str(error) and f"Pw{role}" not in str(error)


def test_the_tool_error_names_a_full_disk_over_a_dead_worker() -> None:
    stderr = (
        "pg_dump: error: could not write to file: No space left on device\n"
        "pg_dump: error: a worker process died unexpectedly\n"
    )
    assert "No space left on device" in last_error_line(stderr)


# -- backup and restore: URLs from the environment, private files, a full disk -------------


def test_backup_and_restore_take_their_urls_from_the_environment_with_private_files(
    emu: RenderEmulator, pg: Cluster, fresh_db: str, tmp_path: Path
) -> None:
    execute(fresh_db, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 50)")
    target_name = f"t_{uuid.uuid4().hex[:10]}"
    target = pg.create_database(target_name)
    old_umask = os.umask(0o022)
    try:
        archive = tmp_path / "out.dir"
        backup = run_cli(
            emu, "backup", str(archive), "--format", "directory", "--jobs", "2", "--json",
            env={"RENDER_ROTATOR_SOURCE_URL": fresh_db},
        )  # fmt: skip
        assert backup.exit_code == 0, backup.output
        assert report_of(backup)["path"] == str(archive)
        modes = {p.name: p.stat().st_mode & 0o777 for p in [archive, *archive.iterdir()]}
        assert modes[archive.name] == 0o700
        assert set(modes.values()) <= {0o700, 0o600} and len(modes) > 2, modes
        restore = run_cli(
            emu, "restore", str(archive), "--jobs", "2",
            env={"RENDER_ROTATOR_TARGET_URL": target},
        )  # fmt: skip
        assert restore.exit_code == 0, restore.output
        assert execute(target, "SELECT count(*) FROM t") == [(50,)]
    finally:
        os.umask(old_umask)
        pg.execute(f'DROP DATABASE IF EXISTS "{target_name}" WITH (FORCE)')


def test_backup_without_a_url_anywhere_says_which_variable_to_set(emu: RenderEmulator) -> None:
    result = run_cli(emu, "backup", "out.dump", env={"RENDER_ROTATOR_SOURCE_URL": None})
    assert result.exit_code == 2
    line = one_error(result)
    assert "no source URL" in line and "RENDER_ROTATOR_SOURCE_URL" in line


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_backup_on_a_full_disk_says_so_and_leaves_no_partial(
    emu: RenderEmulator, fresh_db: str, small_disk: Callable[[int], Path], jobs: str
) -> None:
    execute(fresh_db, "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    disk = small_disk(64)
    fill(disk)
    fmt = "directory" if jobs != "1" else "custom"
    result = run_cli(
        emu, "backup", str(disk / "out.dump"), "--format", fmt, "--jobs", jobs,
        env={"RENDER_ROTATOR_SOURCE_URL": fresh_db},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    line = one_error(result)
    assert "No space left on device" in line and "free space" in line, line
    assert "worker process died" not in line
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


# -- refuse before acting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--jobs", "100000"], "100000 is not in the range 1<=x<=64"),
        (["--command-timeout", "1e300"], "is not between 1 and 604800 seconds"),
        (["--command-timeout", "nan"], "is not between 1 and 604800 seconds"),
        (["--connect-timeout", "-5"], "is not between 1 and 604800 seconds"),
    ],
)
def test_out_of_range_options_are_refused_with_the_range(
    emu: RenderEmulator, fresh_db: str, args: list[str], expected: str
) -> None:
    result = run_cli(emu, "migrate", *args, env={
        "RENDER_ROTATOR_SOURCE_URL": fresh_db, "RENDER_ROTATOR_TARGET_URL": fresh_db,
    })  # fmt: skip
    assert result.exit_code == 2
    assert expected in result.output, result.output


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("jobs = 100000", "jobs: must be from 1 to 64, got 100000"),
        ("command_timeout = 1e300", "command_timeout: must be between 0 and 604800 seconds"),
        ("connect_timeout = nan", "connect_timeout: must be a finite number between 0 and"),
        ("deploy_timeout = -1", "deploy_timeout: must be between 0 and 604800 seconds"),
    ],
)
def test_out_of_range_config_is_refused_before_any_request(
    emu: RenderEmulator, tmp_path: Path, setting: str, expected: str
) -> None:
    app = make_app(emu)
    config = write_config(tmp_path, app)
    key = setting.split(" = ")[0]
    config.write_text(re.sub(rf"(?m)^{key} = .*$", setting, config.read_text()))
    before, requests = emu.state_snapshot(), len(emu.requests)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    assert expected in one_error(result)
    assert emu.state_snapshot() == before and len(emu.requests) == requests


def test_a_version_downgrade_is_refused_before_anything_changes(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app)
    current = emu.postgres(app.postgres_id)["version"]
    config.write_text(config.read_text().replace(
        f'name = "{app.name}"\n', f'name = "{app.name}"\nversion = "{int(current) - 1}"\n'
    ))  # fmt: skip
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    line = one_error(result)
    assert f"older than the database's PostgreSQL {current}" in line and "never downgrades" in line
    assert emu.state_snapshot() == before
    assert not journal_file(config, app).exists()


def test_a_problem_with_the_second_database_stops_the_run_before_the_first_rotates(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    first, second = make_app(emu, plan=PAID_PLAN), make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, first, strategy="create-first")
    text = config.read_text().replace(f'owner_id = "{first.owner_id}"\n', "")
    # the second database's target names the first app's service: it does not point at it
    text += f'\n[[database]]\nname = "{second.name}"\n\n  [[database.target]]\n'
    text += f'  service = "{first.service_id}"\n  key = "DATABASE_URL"\n'
    config.write_text(text)
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    line = one_error(result)
    assert f"does not point at {second.name}" in line and "check the target" in line
    assert emu.state_snapshot() == before


# -- any failure lands safely ------------------------------------------------------------------


def _stamps(seconds: int) -> list[str]:
    now = datetime.now(UTC)
    return [(now + timedelta(seconds=s)).strftime("%Y%m%dT%H%M%SZ") for s in range(seconds)]


def test_an_unexpected_error_mid_rotation_thaws_and_says_what_failed(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The backup manifest cannot be written (its path is taken by a directory): an OSError
    from outside our error types, after the services were frozen."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    backups = tmp_path / "backups"
    for stamp in _stamps(120):
        # also the names a second run in the same second takes (-2, -3: its archive exists)
        for suffix in ("", "-2", "-3", "-4"):
            name = f"{app.name}-{app.postgres_id}-{stamp}{suffix}.dump.json"
            (backups / name).mkdir(parents=True)
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    line = one_error(result)
    assert "failed in phase backup: Is a directory on " in line and ".dump.json" in line
    assert "No cutover" in line and "Traceback" not in result.output
    assert emu.state_snapshot() == before  # thawed, nothing created, nothing repointed
    assert not journal_file(config, app).exists()  # landed: closed and archived
    assert_no_secret(all_text(result, tmp_path), *app_secrets(app))
    # with -v the traceback is there (scrubbed) for a bug report
    verbose = run_cli(emu, "-v", "rotate", "-c", str(config), "--yes")
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
    assert "IsADirectoryError" in verbose.stderr
    assert_no_secret(all_text(verbose, tmp_path), *app_secrets(app))
    assert emu.state_snapshot() == before


def test_a_full_state_disk_before_the_first_change_changes_nothing(
    emu: RenderEmulator, tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    state = small_disk(16)
    fill(state)
    config = write_config(tmp_path, app, strategy="create-first", state_dir=str(state))
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 1, result.output
    line = one_error(result)
    assert f"No space left on device writing {state}" in line and "free some space" in line
    assert emu.state_snapshot() == before


def test_a_backup_disk_filling_up_mid_rotation_lands_on_the_old_database(
    emu: RenderEmulator, tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    app = make_app(emu, plan=PAID_PLAN, rows=3000)
    backups = small_disk(32)
    fill(backups, leave=8192)
    # a killed earlier backup of this database left a partial archive; another's is kept
    stale = backups / f"{app.name}-{app.postgres_id}-20200101T000000Z.dump.partial"
    stale.mkdir()
    (stale / "toc.dat").write_bytes(b"x")
    foreign = backups / "other-dpg-x-20200101T000000Z.dump.partial"
    foreign.mkdir()
    config = write_config(tmp_path, app, strategy="create-first", backup_dir=str(backups))
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    line = one_error(result)
    assert "failed in phase backup" in line and "No space left on device" in line, line
    assert "No cutover" in line
    assert emu.state_snapshot() == before
    assert sorted(p.name for p in backups.iterdir()) == ["filler", foreign.name]
    assert_no_secret(all_text(result, tmp_path, backups), *app_secrets(app))


def test_rotate_restart_recognises_the_services_the_discarded_run_froze(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, "freeze", DONE)
    assert emu.service(app.service_id)["suspended"] == "suspended"  # by the killed run
    result = run_cli(emu, "rotate", "-c", str(config), "--restart", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert_rotated(app, report_of(result), before, config=config)  # not left suspended


def test_resume_refreezes_services_a_failed_landing_thawed_unrecorded(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """The journal says the services are frozen, but they run (a landing thawed them and
    could not record it): resume freezes them again before copying."""
    app = make_app(emu, plan=PAID_PLAN)
    config = write_config(tmp_path, app, strategy="create-first")
    before = inventory(app.external_url)
    rotate_and_kill(emu, app, config, "backup", DONE)
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        client.resume_service(app.service_id)
    suspends = len([r for r in emu.requests if r[1].endswith("/suspend")])
    result = run_cli(emu, "resume", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert len([r for r in emu.requests if r[1].endswith("/suspend")]) == suspends + 1
    assert_rotated(app, report_of(result), before, config=config)


def test_a_journal_that_cannot_be_written_still_lands_and_resume_finishes(
    emu: RenderEmulator, tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    """The state disk fills up when the journal grows (the backup's inventory): the landing
    thaws anyway, the last good journal stays on disk, and once there is space `resume`
    refreezes and finishes the rotation."""
    app = make_app(emu, plan=PAID_PLAN)
    state = small_disk(64)
    fill(state, leave=2 * 4096)  # room for the journal and one rewrite of it, as it starts
    config = write_config(tmp_path, app, strategy="create-first", state_dir=str(state))
    before_data = inventory(app.external_url)
    before = emu.state_snapshot()
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    line = one_error(result)
    journal = state / f"{app.name}.journal.json"
    assert f"No space left on device writing {journal}" in line, line
    assert "No cutover" in line and "journal could not be updated" in line
    assert "render-rotator resume" in line
    assert emu.state_snapshot() == before  # thawed although nothing could be recorded
    recorded = json.loads(journal.read_text())
    assert recorded["status"] == "running"
    assert recorded["state"]["frozen"]["suspended"] == [app.service_id]
    (state / "filler").unlink()
    resumed = run_cli(emu, "resume", "-c", str(config), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert_rotated(app, report_of(resumed), before_data)
    assert not journal.exists()
    assert_no_secret(all_text(result, tmp_path, state), *app_secrets(app))


pytestmark = pytest.mark.usefixtures("no_faults_left")
