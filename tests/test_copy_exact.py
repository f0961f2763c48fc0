"""The copy carries what a naive copy gets wrong: reg* values by name, tables without
columns, materialized views left unpopulated; and a half-done target is emptied within
command_timeout and a lock timeout, even behind another session's open transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg2
import pytest

from render_rotator.errors import DatabaseError
from render_rotator.postgres.clean import clean_database
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import unique_name

SCHEMA = """
CREATE TABLE things (id int);
CREATE TABLE refs AS
    SELECT g AS id, 'things'::regclass AS rel, 'things'::regtype AS typ,
           'now'::regproc AS fn, 'public'::regnamespace AS nsp,
           ARRAY['things'::regclass] AS rels, md5(g::text) || md5(g::text) AS pad
    FROM generate_series(1, 120000) g;
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
CREATE MATERIALIZED VIEW later AS SELECT id FROM things WITH NO DATA;
CREATE MATERIALIZED VIEW ready AS SELECT 1 AS x;
"""


@pytest.fixture
def pair(pg: Cluster) -> Iterator[tuple[str, str, str]]:
    src, dst = unique_name("xsrc"), unique_name("xdst")
    source, target = pg.create_database(src), pg.create_database(dst)
    # objects in the target first, so its OIDs differ from the source's
    pg.execute("CREATE TABLE filler1 (a int); CREATE TABLE filler2 (a int)", dbname=dst)
    pg.execute("DROP TABLE filler1, filler2", dbname=dst)
    yield source, target, dst
    for name in (src, dst):
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(**PgURL.parse(url).psycopg2_kwargs(10))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_reg_types_no_column_tables_and_unpopulated_views_copy_exactly(
    pg: Cluster, pair: tuple[str, str, str]
) -> None:
    source, target, _ = pair
    pg.execute(SCHEMA, dbname=PgURL.parse(source).dbname)
    copy_database(source, target, jobs=2, verify=True)
    names = (
        "SELECT count(*) FROM refs WHERE rel = 'things'::regclass AND typ = 'things'::regtype"
        " AND fn = 'now'::regproc AND nsp = 'public'::regnamespace"
        " AND rels = ARRAY['things'::regclass]"
    )
    assert query(target, names) == [(120000,)]
    assert query(target, "SELECT rel::text, typ::text FROM refs LIMIT 1") == [("things", "things")]
    assert query(target, "SELECT count(*) FROM no_columns") == [(3,)]
    populated = "SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1"
    assert query(target, populated) == [("later", False), ("ready", True)]


def test_emptying_a_half_done_target_obeys_the_lock_timeout(
    pg: Cluster, pair: tuple[str, str, str]
) -> None:
    """Another session holds a lock on a table of the target in an open transaction: the
    clean-up must fail within command_timeout, naming the lock, not hang."""
    _, target, _ = pair
    query(target, "CREATE TABLE held (id int) ; SELECT 1")
    conn = psycopg2.connect(**PgURL.parse(target).psycopg2_kwargs(10))
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN; LOCK TABLE held IN ACCESS SHARE MODE")
        errors: list[BaseException] = []

        def clean() -> None:
            try:
                clean_database(target, connect_timeout=5, command_timeout=2)
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        worker = threading.Thread(target=clean, daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "clean_database hung behind an open transaction"
        [error] = errors
        assert isinstance(error, DatabaseError)
        assert "lock" in str(error).lower() and "command_timeout" in str(error), str(error)
    finally:
        conn.rollback()
        conn.close()
    assert query(target, "SELECT count(*) FROM pg_class WHERE relname = 'held'") == [(1,)]
