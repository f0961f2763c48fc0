"""The seed engine against real servers: examples as written, versions, and bad input."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from recorded import require_shared, shared_dir

from render_rotator import DatabaseManager, migrate_database, verify_copy
from render_rotator.errors import (
    AuthenticationError,
    BackupError,
    ClientTooOldError,
    CommandTimeoutError,
    ConnectError,
    DatabaseExistsError,
    DatabaseNotFoundError,
    InvalidURLError,
    ToolError,
    UsageError,
)
from render_rotator.postgres.connect import connect, wait_interruptible
from render_rotator.postgres.migrate import migrate
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import make_rich_database, unique_name

SEED = shared_dir() / "seeds" / "database-management-feature.md"
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def seed_examples() -> list[str]:
    text = SEED.read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _database_exists(cluster: Cluster, name: str) -> bool:
    return bool(cluster.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def _drop(cluster: Cluster, name: str) -> None:
    cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the seed's usage examples, run as written against real servers ------------------


def test_seed_examples_run_as_written(pg15: Cluster, pg18: Cluster, tmp_path, monkeypatch):
    """Both of the seed's examples, with real URLs: PostgreSQL 15 into 18, an exact copy."""
    require_shared(SEED)
    examples = seed_examples()
    assert len(examples) == 2
    source_db = unique_name("seedsrc")
    source = make_rich_database(pg15, source_db, owner_role="app_owner_only_on_source")
    _drop(pg18, "new_database")
    replacements = {
        "from features.database_management.code import": "from render_rotator import",
        "postgresql://user:pass@source-db:5432/db": source,
        "postgresql://user:pass@target-db:5432/db": pg18.url("new_database"),
        "postgresql://admin:pass@admin-db:5432/postgres": pg18.admin_url,
        "postgresql://user:pass@target-db:5432/new_database": pg18.url("new_database"),
    }
    monkeypatch.chdir(tmp_path)
    try:
        for code in examples:
            for placeholder, real in replacements.items():
                code = code.replace(placeholder, real)
            assert "source-db" not in code and "admin-db" not in code
            scope: dict[str, object] = {}
            exec(compile(code, "seed-example", "exec"), scope)  # noqa: S102 - the seed's code
            if "success" in scope:
                assert scope["success"] is True
            report = verify_copy(source, pg18.url("new_database"))
            assert report.equal, report.differences
            assert report.source.row_counts["public.customers"] == 500
            assert report.source.row_counts["public.owned_by_app"] == 10
            assert report.source.sequences["public.invoice_number_seq"] == (1041, True)
            _drop(pg18, "new_database")
        assert (tmp_path / "backup.dump").stat().st_size > 0
    finally:
        _drop(pg18, "new_database")
        _drop(pg15, source_db)


def test_copy_keeps_every_kind_of_object(pg15: Cluster, pg18: Cluster):
    """Tables, sequence, index, view, function, jsonb, FK, foreign-owned object: all arrive."""
    name = unique_name("rich")
    source = make_rich_database(pg15, name, owner_role="owner_missing_on_target")
    target_name = unique_name("richcopy")
    try:
        result = migrate(
            source,
            pg18.url(target_name),
            admin_url=pg18.admin_url,
            create_db=target_name,
            connect_timeout=10,
            command_timeout=120,
        )
        assert result.report is not None and result.report.equal
        rows = pg18.query(
            "SELECT email, profile->>'n', order_count(id) FROM customers WHERE id = 7",
            dbname=target_name,
        )
        assert rows == [("user7@example.com", "7", 3)]
        assert pg18.query("SELECT count(*) FROM big_spenders", dbname=target_name)[0][0] == 500
        assert pg18.query("SELECT nextval('invoice_number_seq')", dbname=target_name) == [(1042,)]
        fk = pg18.query(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'", dbname=target_name
        )
        assert fk == [(1,)]
        owner = pg18.query(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_app'", dbname=target_name
        )
        assert owner == [("postgres",)]  # --no-owner: the restoring user owns it
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            pg18.execute("INSERT INTO orders (customer_id, total) VALUES (99999, 1)", target_name)
    finally:
        _drop(pg15, name)
        _drop(pg18, target_name)


def test_restore_by_non_superuser_database_owner(pg18: Cluster, tmp_path):
    """As on Render: the restoring role owns its database but is not a superuser."""
    name = unique_name("src")
    source = make_rich_database(pg18, name)
    # an extension the provider pre-installs as superuser (like Render); its COMMENT needs
    # the extension's owner, which the restoring role is not
    pg18.execute(
        "CREATE EXTENSION cube; CREATE TABLE embeddings (id int PRIMARY KEY, v cube);"
        "INSERT INTO embeddings VALUES (1, '(1,2,3)'), (2, '(4,5,6)')",
        dbname=name,
    )
    role, password = unique_name("owner"), "s3cret:pw"
    pg18.create_role(role, password)
    target_db = unique_name("dst")
    pg18.create_database(target_db, owner=role)
    pg18.execute("CREATE EXTENSION cube", dbname=target_db)
    try:
        manager = DatabaseManager(command_timeout=120)
        manager.backup_database(source, tmp_path / "b.dump")
        result = manager.restore_database(pg18.url(target_db, role, password), tmp_path / "b.dump")
        assert any("EXTENSION cube" in s for s in result.skipped)
        assert verify_copy(source, pg18.url(target_db)).equal
    finally:
        _drop(pg18, name)
        _drop(pg18, target_db)
        pg18.execute(f'DROP ROLE IF EXISTS "{role}"')


# -- versions ----------------------------------------------------------------------


def test_fifteen_to_eighteen_upgrade_copy(pg15: Cluster, pg18: Cluster):
    name = unique_name("up")
    source = make_rich_database(pg15, name)
    try:
        assert migrate_database(source, pg18.url(name), pg18.admin_url, name) is True
        version = pg18.query("SHOW server_version_num", dbname=name)[0][0]
        assert str(version).startswith("18")
        assert verify_copy(source, pg18.url(name)).equal
    finally:
        _drop(pg15, name)
        _drop(pg18, name)


@pytest.mark.skipif(not PG15_BIN.is_dir(), reason="needs the PostgreSQL 15 client")
def test_old_pg_dump_fails_before_doing_anything(pg18: Cluster, tmp_path):
    name = unique_name("ver")
    source = make_rich_database(pg18, name)
    target = unique_name("vertarget")
    try:
        with pytest.raises(ClientTooOldError) as info:
            migrate(
                source,
                pg18.url(target),
                admin_url=pg18.admin_url,
                create_db=target,
                pg_bin=PG15_BIN,
            )
        message = str(info.value)
        assert "15" in message and "PostgreSQL 18" in message and "--pg-bin" in message
        assert not _database_exists(pg18, target)
        assert list(tmp_path.iterdir()) == []
    finally:
        _drop(pg18, name)


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h/db", "postgresql://u:p@/db", "postgresql://u:p@h:99999/db", "not a url", ""],
)
def test_malformed_url_is_a_usage_error(url):
    with pytest.raises(InvalidURLError) as info:
        PgURL.parse(url)
    assert info.value.exit_code == 2
    assert ":p@" not in str(info.value)


def test_both_url_schemes_and_sslmode_are_accepted():
    a = PgURL.parse("postgres://u:p%40ss@h:6543/db?sslmode=require")
    b = PgURL.parse("postgresql://u:p%40ss@h:6543/db?sslmode=require")
    assert a == b
    assert a.password == "p@ss" and a.sslmode == "require" and a.port == 6543
    assert a.redacted() == "postgresql://u:***@h:6543/db?sslmode=require"
    assert "p%40ss" not in a.public_url() and "sslmode=require" in a.public_url()


def test_refused_connection_retries_then_fails_within_connect_timeout(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        caplog.set_level(logging.WARNING, logger="render_rotator")
        started = time.monotonic()
        with pytest.raises(ConnectError) as info:
            DatabaseManager(connect_timeout=3).backup_database(
                f"postgresql://u:pw@127.0.0.1:{port}/db", "/tmp/never-written.dump"
            )
        elapsed = time.monotonic() - started
    assert 2 <= elapsed < 3 + 2.5
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 2
    assert "gave up after 3s" in str(info.value)
    assert ":pw@" not in str(info.value) and not Path("/tmp/never-written.dump").exists()


def test_silent_server_times_out_within_connect_timeout():
    """A host that accepts TCP but never answers: connect_timeout must still hold."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectError):
            verify_copy(
                f"postgresql://u:pw@127.0.0.1:{port}/db",
                f"postgresql://u:pw@127.0.0.1:{port}/db",
                connect_timeout=3,
            )
        assert time.monotonic() - started < 3 + 3


def test_an_interruption_while_connecting_closes_the_half_open_session():
    """Ctrl-C (or SIGTERM, which the CLI turns into it) while a session is being set up
    raises KeyboardInterrupt, not a database error, and closes the socket at once: a server
    waiting for the password would otherwise keep that backend, and a DROP DATABASE behind
    it, waiting until its authentication_timeout (a stopped demo hung 60 s on it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        previous = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(wait_interruptible)  # as every CLI command does
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                connect(f"postgresql://u:pw@127.0.0.1:{port}/db", connect_timeout=30)
        finally:
            timer.cancel()
            psycopg2.extensions.set_wait_callback(previous)
        assert time.monotonic() - started < 5  # at once, not at the end of connect_timeout
        accepted, _ = listener.accept()
        with accepted:
            accepted.settimeout(3)
            received = accepted.recv(4096)  # the client's first packet (SSL request)
            assert received
            assert accepted.recv(4096) == b""  # then the client closed: no timeout


def test_wrong_password_fails_fast_without_retries(pg18: Cluster, caplog):
    caplog.set_level(logging.WARNING, logger="render_rotator")
    bad = pg18.url("postgres", "postgres", "definitely-wrong")
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        verify_copy(bad, bad, connect_timeout=10)
    assert time.monotonic() - started < 2
    assert "definitely-wrong" not in str(info.value)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_missing_source_database(pg18: Cluster, tmp_path):
    with pytest.raises(DatabaseNotFoundError) as info:
        DatabaseManager().backup_database(pg18.url("no_such_db"), tmp_path / "x.dump")
    assert "no_such_db" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_target_database_is_refused_and_left_alone(pg18: Cluster):
    name = unique_name("exists")
    pg18.create_database(name)
    pg18.execute("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)", dbname=name)
    source = make_rich_database(pg18, unique_name("srcx"))
    try:
        manager = DatabaseManager(pg18.admin_url)
        with pytest.raises(DatabaseExistsError):
            manager.create_database(name)
        assert migrate_database(source, pg18.url(name), pg18.admin_url, name) is False
        assert pg18.query("SELECT * FROM keep_me", dbname=name) == [(1,)]
    finally:
        _drop(pg18, name)
        _drop(pg18, PgURL.parse(source).dbname)


def test_hostile_database_name_is_created_literally(pg18: Cluster):
    name = 'new"; DROP DATABASE postgres; --'
    try:
        DatabaseManager(pg18.admin_url).create_database(name)
        assert _database_exists(pg18, "postgres")
        rows = pg18.query("SELECT datname FROM pg_database WHERE datname LIKE 'new\"%'")
        assert rows == [(name,)]
    finally:
        pg18.execute('DROP DATABASE IF EXISTS "new""; DROP DATABASE postgres; --"')


def test_overlong_database_name_is_rejected_before_sql(pg18: Cluster):
    with pytest.raises(UsageError):
        DatabaseManager(pg18.admin_url).create_database("x" * 64)


@pytest.mark.parametrize("where", ["missing-dir/b.dump", "file-as-dir/b.dump"])
def test_unwritable_backup_path(pg18: Cluster, tmp_path, where):
    (tmp_path / "file-as-dir").write_text("a file, not a directory")
    with pytest.raises(BackupError) as info:
        DatabaseManager().backup_database(pg18.admin_url, tmp_path / where)
    assert "b.dump" in str(info.value)


def _hold_lock(cluster: Cluster, dbname: str, table: str, seconds: float) -> threading.Thread:
    """Hold an ACCESS EXCLUSIVE lock so pg_dump blocks on it for `seconds`."""
    ready = threading.Event()

    def hold() -> None:
        conn = psycopg2.connect(**PgURL.parse(cluster.url(dbname)).psycopg2_kwargs(10))
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            ready.set()
            time.sleep(seconds)
        conn.rollback()
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread


def _children_named(program: str) -> list[int]:
    """This process's own children running `program` (never anyone else's on the machine)."""
    pids = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                status = (proc / "status").read_text()
            except OSError:
                continue
            parent = next(
                (ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), ""
            )
            if parent == str(me) and argv and argv[0].endswith(program.encode()):
                pids.append(int(proc.name))
    return pids


def test_pg_dump_killed_mid_run_fails_cleanly(pg18: Cluster, tmp_path):
    import os
    import signal

    name = unique_name("kill")
    source = make_rich_database(pg18, name)
    holder = _hold_lock(pg18, name, "orders", 8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            DatabaseManager(command_timeout=60).backup_database(
                source, tmp_path / "k.dump", inventory=False
            )
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not (pids := _children_named("pg_dump")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids, "pg_dump never started"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    worker.join(30)
    holder.join(15)
    try:
        assert len(errors) == 1 and isinstance(errors[0], ToolError)
        assert "pg_dump was killed by SIGKILL" in str(errors[0])
        assert list(tmp_path.iterdir()) == []  # no partial archive left behind
    finally:
        _drop(pg18, name)


def test_command_timeout_kills_the_tool_and_names_it(pg18: Cluster, tmp_path):
    name = unique_name("slow")
    source = make_rich_database(pg18, name)
    holder = _hold_lock(pg18, name, "orders", 6)
    try:
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError) as info:
            DatabaseManager(command_timeout=2, lock_wait_timeout=30).backup_database(
                source, tmp_path / "t.dump", inventory=False
            )
        assert time.monotonic() - started < 8
        assert "pg_dump timed out after 2s" in str(info.value)
        assert not _children_named("pg_dump")
        assert list(tmp_path.iterdir()) == []
    finally:
        holder.join(15)
        _drop(pg18, name)


def test_lock_wait_timeout_is_passed_to_pg_dump(pg18: Cluster, tmp_path):
    name = unique_name("lock")
    source = make_rich_database(pg18, name)
    holder = _hold_lock(pg18, name, "orders", 5)
    try:
        with pytest.raises(ToolError) as info:
            DatabaseManager(lock_wait_timeout=1).backup_database(
                source, tmp_path / "l.dump", inventory=False
            )
        assert "lock" in str(info.value).lower()
    finally:
        holder.join(15)
        _drop(pg18, name)


def test_no_password_in_any_child_cmdline_or_environment(pg18: Cluster, tmp_path):
    """Sample every process's argv (and our children's environment) during a migrate."""
    name = unique_name("secret")
    source = make_rich_database(pg18, name)
    target = unique_name("secretdst")
    pg18.execute(
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b "
        "FROM generate_series(1, 300000) g",
        dbname=name,
    )
    password = pg18.password
    seen_tools: set[str] = set()
    leaks: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    argv = (proc / "cmdline").read_bytes()
                    environ = (proc / "environ").read_bytes()
                except OSError:
                    continue
                program = argv.split(b"\0")[0].rsplit(b"/", 1)[-1].decode(errors="replace")
                if program in ("pg_dump", "pg_restore"):
                    seen_tools.add(program)
                    if password.encode() in environ:
                        leaks.append(f"environ of {program}")
                if password.encode() in argv:
                    leaks.append(f"argv of {program}")
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert migrate_database(source, pg18.url(target), pg18.admin_url, target) is True
    finally:
        done.set()
        sampler.join()
        _drop(pg18, name)
        _drop(pg18, target)
    assert {"pg_dump", "pg_restore"} <= seen_tools
    assert leaks == []


def test_restore_into_a_database_that_is_not_empty_is_refused_untouched(pg18: Cluster, tmp_path):
    name, target = unique_name("src"), unique_name("full")
    source = make_rich_database(pg18, name)
    pg18.create_database(target)
    pg18.execute("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)", dbname=target)
    try:
        manager = DatabaseManager(command_timeout=120)
        manager.backup_database(source, tmp_path / "b.dump")
        with pytest.raises(UsageError, match=r"is not empty \(1 objects: table public.keep_me\)"):
            manager.restore_database(pg18.url(target), tmp_path / "b.dump")
        assert pg18.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", target) == [
            (1,)
        ]
    finally:
        _drop(pg18, name)
        _drop(pg18, target)
