"""A backup beside a copy, in one exported snapshot, against real servers: both hold the
same data (rows committed after the export are in neither), the first failure stops the
other side and is named, and each engine can be stopped from another thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from render_rotator.errors import CopyError, DatabaseError, ToolError
from render_rotator.postgres.binaries import resolve_client
from render_rotator.postgres.clean import target_objects
from render_rotator.postgres.connect import QueryCancel, connection
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.fingerprint import take_fingerprint
from render_rotator.postgres.inventory import compare
from render_rotator.postgres.manager import DatabaseManager
from render_rotator.postgres.runner import run_tool
from render_rotator.postgres.side_by_side import SideFailed, exported_snapshot, side_by_side
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster


@pytest.fixture
def databases(pg: Cluster) -> Iterator[tuple[str, str]]:
    """(source, empty target) on the default cluster; the source holds 1000 rows."""
    names = [f"t_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    source, target = (pg.create_database(n) for n in names)
    pg.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL);"
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;"
        "CREATE TABLE tags (id serial PRIMARY KEY, item bigint REFERENCES items, tag text);"
        "INSERT INTO tags (item, tag) SELECT g, 't' FROM generate_series(1, 500) g;",
        dbname=names[0],
    )
    yield source, target
    for name in names:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count(url: str, table: str) -> int:
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names
        return int(cur.fetchone()[0])


def _write_more(url: str) -> None:
    """Rows committed after the snapshot was exported."""
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO items SELECT g, 'late' FROM generate_series(1001, 1100) g")
        cur.execute("INSERT INTO tags (item, tag) VALUES (1001, 'late')")


def test_a_backup_and_a_copy_in_one_exported_snapshot_hold_the_same_state(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = databases
    manager = DatabaseManager(jobs=2)
    with exported_snapshot(source, connect_timeout=10, statement_timeout=60) as snapshot:
        _write_more(source)  # committed now: after the snapshot, before either reads
        backup = manager.backup_database(
            source, tmp_path / "b.dump", archive_format="directory", jobs=2, snapshot=snapshot
        )
        copy_database(source, target, jobs=2, snapshot=snapshot)
    assert _count(source, "items") == 1100
    # neither holds the late rows: both read the exported snapshot, not the database now
    assert _count(target, "items") == 1000 and _count(target, "tags") == 500
    assert backup.fingerprint is not None and backup.inventory is not None
    assert backup.fingerprint.tables["public.items"].rows == 1000
    # the backup's fingerprint (what verify checks the new database against) is the copy's
    copied = take_fingerprint(target, like=backup.fingerprint)
    result = compare(backup.fingerprint, copied, 0.0)
    assert result.equal, result.differences


def test_a_snapshot_that_is_no_longer_exported_is_refused_before_anything_is_copied(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = databases
    with exported_snapshot(source, connect_timeout=10, statement_timeout=60) as snapshot:
        pass  # its transaction has ended: nothing can import it any more
    with pytest.raises(DatabaseError, match="snapshot"):
        copy_database(source, target, jobs=2, snapshot=snapshot)
    assert target_objects_of(target) == []
    with pytest.raises(DatabaseError, match="snapshot"):
        DatabaseManager().backup_database(source, tmp_path / "b.dump", snapshot=snapshot)
    assert list(tmp_path.iterdir()) == []


def target_objects_of(url: str) -> list[str]:
    with connection(url) as conn:
        return target_objects(conn)


def _imports(url: str, snapshot: str) -> int:
    """Import `snapshot` in a session of its own, as each side does; rows it sees."""
    with connection(url, autocommit=False) as conn:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            cur.execute("SELECT count(*) FROM items")
            rows = int(cur.fetchone()[0])
        conn.rollback()
        return rows


def test_both_sides_get_one_snapshot_and_the_first_failure_stops_the_other(
    databases: tuple[str, str],
) -> None:
    source, _target = databases
    seen: dict[str, str] = {}

    def failing(snapshot: str, stop: QueryCancel) -> None:
        seen["backup"] = snapshot
        _imports(source, snapshot)
        raise ToolError("pg_dump exited with code 1: No space left on device")

    def waits_for_stop(snapshot: str, stop: QueryCancel) -> None:
        seen["copy"] = snapshot
        assert _imports(source, snapshot) == 1000
        assert stop.wait(60), "the failing side did not stop this one"
        raise CopyError("the copy was stopped before it finished")

    with pytest.raises(SideFailed) as failed:
        side_by_side(
            source,
            beside=("backup", failing),
            main=("copy", waits_for_stop),
            connect_timeout=10,
        )
    assert failed.value.name == "backup"
    assert "No space left on device" in str(failed.value.error)
    assert seen["backup"] == seen["copy"]

    # the other way round: the main side fails, the helper is stopped
    stopped = threading.Event()

    def beside_waits(snapshot: str, stop: QueryCancel) -> None:
        assert stop.wait(60)
        stopped.set()
        raise ToolError("pg_dump was stopped")

    def main_fails(snapshot: str, stop: QueryCancel) -> None:
        raise CopyError("table public.items: psql (target) exited with code 3")

    with pytest.raises(SideFailed) as failed:
        side_by_side(source, beside=("backup", beside_waits), main=("copy", main_fails))
    assert failed.value.name == "copy" and "psql (target)" in str(failed.value)
    assert stopped.is_set()


def test_both_sides_return_their_results_and_times(databases: tuple[str, str]) -> None:
    source, _target = databases
    both = side_by_side(
        source,
        beside=("backup", lambda snapshot, stop: _imports(source, snapshot)),
        main=("copy", lambda snapshot, stop: _imports(source, snapshot) + 1),
    )
    assert (both.beside, both.main) == (1000, 1001)
    assert both.beside_seconds >= 0 and both.main_seconds >= 0


def test_a_copy_told_to_stop_ends_as_stopped(databases: tuple[str, str]) -> None:
    source, target = databases
    stop = threading.Event()
    stop.set()
    with pytest.raises(CopyError, match="stopped"):
        copy_database(source, target, jobs=2, stop=stop)
    with connection(target) as conn, conn.cursor() as cur:  # stopped in or after the schema
        cur.execute("SELECT to_regclass('items') IS NULL")
        no_table = bool(cur.fetchone()[0])
    assert no_table or _count(target, "items") == 0  # no row was copied


def test_a_backup_told_to_stop_kills_pg_dump_and_leaves_no_archive(
    databases: tuple[str, str], pg: Cluster, tmp_path: Path
) -> None:
    source, _target = databases
    # a session holding a table lock: pg_dump waits for it until it is stopped
    holder = psycopg2.connect(**PgURL.parse(source).psycopg2_kwargs(10))
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        cancel = QueryCancel()
        waiting = threading.Thread(target=_stop_when_waiting, args=(source, cancel))
        waiting.start()
        with pytest.raises(DatabaseError):
            DatabaseManager(command_timeout=120).backup_database(
                source, tmp_path / "b.dump", cancel=cancel
            )
        waiting.join()
        assert cancel.is_set()
    finally:
        holder.rollback()
        holder.close()
    assert list(tmp_path.iterdir()) == []  # no archive, no partial one


def _stop_when_waiting(url: str, cancel: QueryCancel) -> None:
    """Set `cancel` once pg_dump waits for the lock (polled, never slept on blindly)."""
    for _ in range(6000):
        with connection(url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                "AND wait_event_type = 'Lock'"
            )
            if cur.fetchone()[0]:
                break
        threading.Event().wait(0.02)
    cancel.set()


def test_a_tool_told_to_stop_is_killed_and_says_so(pg: Cluster) -> None:
    client = resolve_client(None)
    url = PgURL.parse(pg.admin_url)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        with pytest.raises(ToolError, match="psql was stopped"):
            run_tool(
                [
                    client.tool("psql"),
                    "--no-psqlrc",
                    f"--dbname={url.public_url()}",
                    "-c",
                    "SELECT pg_sleep(120)",
                ],
                urls=[url],
                timeout=300,
                what="a long query",
                stop=stop,
            )
    finally:
        timer.cancel()
