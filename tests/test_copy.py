"""The parallel copy against real servers: exact data and schema, clean failure, re-runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from render_rotator.errors import CommandTimeoutError, CopyError, DatabaseError
from render_rotator.postgres import archive
from render_rotator.postgres.binaries import resolve_client
from render_rotator.postgres.catalog import SourceTable
from render_rotator.postgres.clean import target_objects
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.inventory import verify_copy
from render_rotator.postgres.passfiles import passfile_for, private_dir, sweep_stale
from render_rotator.postgres.planning import plan_chunks
from render_rotator.postgres.progress import CopyProgressReport
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import unique_name

# Everything the issue lists: foreign keys, a table without a primary key, a partitioned
# table, large objects and bytea, a generated column, a view and a materialized view,
# sequences owned by columns, names needing quotes; plus inheritance, an identity column,
# an unlogged table, a user type that forces text-format COPY and a jsonb GIN index.
EDGE_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    profile jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX customers_profile_gin ON customers USING gin (profile);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    qty positive NOT NULL,
    price numeric(10, 2) NOT NULL,
    total numeric(12, 2) GENERATED ALWAYS AS (qty * price) STORED,
    placed_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE audit_log (at timestamptz NOT NULL, message text, moods mood[]);
CREATE TABLE measurements (
    id serial,
    taken_on date NOT NULL,
    value double precision,
    PRIMARY KEY (id, taken_on)
) PARTITION BY RANGE (taken_on);
CREATE TABLE measurements_2023 PARTITION OF measurements
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX measurements_value_idx ON measurements (value);
CREATE TABLE documents (
    id serial PRIMARY KEY,
    body bytea NOT NULL,
    attachment oid
);
CREATE TABLE vehicles (id serial PRIMARY KEY, name text);
CREATE TABLE cars (doors int) INHERITS (vehicles);
CREATE UNLOGGED TABLE cache_entries (k text PRIMARY KEY, v text);
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Order Lines" (
    "Line ID" serial PRIMARY KEY,
    "order" bigint REFERENCES orders (id),
    "a:b" text,
    "we""ird" int,
    "Mood" mood
);
CREATE TABLE "Sales Dept"."it's" ("back\slash" text, "UPPER" int);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE qty > 5;
CREATE MATERIALIZED VIEW customer_totals AS
    SELECT customer_id, count(*) AS n, sum(total) AS spent FROM orders GROUP BY customer_id;
CREATE UNIQUE INDEX customer_totals_idx ON customer_totals (customer_id);
CREATE SEQUENCE invoice_seq START 1000;
CREATE TABLE invoices (
    number bigint NOT NULL DEFAULT nextval('invoice_seq'),
    order_id bigint REFERENCES orders (id)
);
ALTER SEQUENCE invoice_seq OWNED BY invoices.number;

INSERT INTO customers (email, profile)
    SELECT 'user' || g || '@example.com',
           jsonb_build_object('n', g, 'tags', jsonb_build_array(g % 7))
    FROM generate_series(1, 800) g;
INSERT INTO orders (customer_id, qty, price, placed_at)
    SELECT 1 + g % 800, 1 + g % 9, (g % 500) / 10.0, timestamptz '2024-01-01' + g * interval '1 min'
    FROM generate_series(1, 6000) g;
DELETE FROM orders WHERE id % 50 = 0;
INSERT INTO audit_log
    SELECT timestamptz '2024-01-01' + g * interval '1 s', 'event ' || g || E'\ttab\\slash\nline',
           ARRAY['ok', 'happy']::mood[]
    FROM generate_series(1, 3000) g;
INSERT INTO audit_log VALUES (now(), NULL, NULL), (now(), '', '{}');
INSERT INTO measurements (taken_on, value)
    SELECT date '2023-06-01' + (g % 400), g * 0.5 FROM generate_series(1, 4000) g;
INSERT INTO documents (body, attachment)
    SELECT decode(repeat(md5(g::text), 1 + g % 40), 'hex'),
           CASE WHEN g <= 3
                THEN lo_from_bytea(0, convert_to(repeat('large object ' || g, 500), 'UTF8'))
           END
    FROM generate_series(1, 300) g;
INSERT INTO vehicles (name) SELECT 'bike ' || g FROM generate_series(1, 20) g;
INSERT INTO cars (name, doors) SELECT 'car ' || g, 2 + g % 3 FROM generate_series(1, 30) g;
INSERT INTO cache_entries SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO "Sales Dept"."Order Lines" ("order", "a:b", "we""ird", "Mood")
    SELECT id, 'x:' || id, id % 3, 'ok' FROM orders WHERE id % 3 = 0;
INSERT INTO "Sales Dept"."it's" VALUES (E'a\\b', 1), (NULL, NULL);
INSERT INTO invoices (order_id) SELECT id FROM orders WHERE id < 500;
SELECT lo_from_bytea(987654, ''), lo_from_bytea(987655, '\x00ff00'::bytea);
COMMENT ON LARGE OBJECT 987655 IS 'a large object''s comment';
REFRESH MATERIALIZED VIEW customer_totals;
"""

_USER_TABLES = r"""
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\_%' ORDER BY 1
"""


def _fingerprint(cluster: Cluster, dbname: str) -> dict[str, object]:
    """Row contents of every table (order-independent), large objects and sequences."""
    found: dict[str, object] = {}
    for (name,) in cluster.query(_USER_TABLES, dbname):
        rows = cluster.query(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM ONLY {name} t",
            dbname,
        )
        found[str(name)] = rows[0]
    found["large objects"] = cluster.query(
        "SELECT oid, md5(lo_get(oid)), obj_description(oid, 'pg_largeobject')"
        " FROM pg_largeobject_metadata ORDER BY 1",
        dbname,
    )
    found["sequences"] = cluster.query(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2", dbname
    )
    return found


def _schema(cluster: Cluster, dbname: str) -> str:
    """pg_dump --schema-only of a database, minus the comment lines that name versions."""
    client = resolve_client()
    url = PgURL.parse(cluster.url(dbname))
    with passfile_for([url]) as passfile:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(passfile)
        out = subprocess.run(
            [
                client.tool("pg_dump"),
                "--schema-only",
                "--no-owner",
                "--no-privileges",
                f"--dbname={url.public_url()}",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    # pg_dump 17.6+ wraps its script in \restrict / \unrestrict with a random key per run
    lines = [
        ln for ln in out.splitlines() if not ln.startswith(("--", "\\restrict ", "\\unrestrict "))
    ]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines))


def _edge_db(cluster: Cluster) -> str:
    name = unique_name("src")
    cluster.create_database(name)
    cluster.execute(EDGE_SCHEMA, dbname=name)
    return name


@pytest.fixture(scope="module")
def edge_source(pg: Cluster) -> str:
    return _edge_db(pg)


def _assert_identical(
    src_cluster: Cluster, src_db: str, dst_cluster: Cluster, dst_db: str, *, schema: bool = True
) -> None:
    report = verify_copy(src_cluster.url(src_db), dst_cluster.url(dst_db))
    assert report.equal, report.differences
    assert _fingerprint(src_cluster, src_db) == _fingerprint(dst_cluster, dst_db)
    if schema:
        assert _schema(src_cluster, src_db) == _schema(dst_cluster, dst_db)


def test_copy_is_exact_with_small_tables_batched(pg: Cluster, edge_source: str) -> None:
    target = unique_name("dst")
    pg.create_database(target)
    events: list[CopyProgressReport] = []
    result = copy_database(
        pg.url(edge_source), pg.url(target), jobs=2, verify=True, progress=events.append
    )
    report = result.verification
    assert report is not None and report.equal
    copied = {k: v for k, v in report.source.row_counts.items() if k != "public.customer_totals"}
    assert result.tables == len(copied) == 12  # leaf partitions, not their parent
    fingerprint = _fingerprint(pg, edge_source)
    only_rows = sum(
        v[0]  # type: ignore[index]
        for k, v in fingerprint.items()
        if k not in ("large objects", "sequences", "public.customer_totals")
    )
    assert result.rows == only_rows  # inheritance parents copied without children
    assert result.large_objects == 5 and result.sequences == 7
    assert {"schema", "data", "post-data", "analyze", "verify"} <= set(result.phase_seconds)
    _assert_identical(pg, edge_source, pg, target)
    assert events[-1].phase == "done" and events[-1].tables_done == result.tables
    assert any(e.phase == "data" for e in events)


def test_the_copys_working_files_live_in_the_private_directory(
    pg: Cluster, edge_source: str
) -> None:
    target = unique_name("dst")
    pg.create_database(target)
    seen: set[Path] = set()  # workers report from their own threads

    def look(event: CopyProgressReport) -> None:
        if event.phase == "data":
            seen.update(private_dir().glob("copy-*/schema.dump"))

    copy_database(pg.url(edge_source), pg.url(target), jobs=2, progress=look)
    assert len(seen) == 1, "the schema archive is in this process's 0700 directory"
    assert not seen.pop().exists() and not list(private_dir().glob("copy-*"))


_KILLED_IN_DATA = """
import os, signal
from render_rotator.postgres.copy import copy_database

def kill(event):
    if event.phase == "data":
        os.kill(os.getpid(), signal.SIGKILL)

copy_database(os.environ["SOURCE_URL"], os.environ["TARGET_URL"], jobs=2, progress=kill)
"""


def test_a_copy_killed_with_sigkill_leaves_nothing_the_next_run_keeps(
    pg: Cluster, edge_source: str
) -> None:
    target = unique_name("dst")
    pg.create_database(target)
    env = {**os.environ, "SOURCE_URL": pg.url(edge_source), "TARGET_URL": pg.url(target)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_IN_DATA], env=env)  # noqa: S603
    assert proc.wait(timeout=120) == -signal.SIGKILL
    left = list(Path(tempfile.gettempdir()).glob(f"render-rotator-{proc.pid}-*"))
    assert len(left) == 1 and list(left[0].glob("copy-*/schema.dump")), left
    assert left[0] in sweep_stale()  # what the next run does first
    assert not left[0].exists()


def test_a_large_table_arrives_frozen_in_binary(pg: Cluster) -> None:
    source = unique_name("src")
    pg.create_database(source)
    pg.execute(
        "CREATE TABLE wide (id bigint PRIMARY KEY, at timestamptz, note text, n numeric);"
        "INSERT INTO wide SELECT g, timestamptz '2024-01-01' + g * interval '1 s', "
        "repeat(md5(g::text), 3), g / 7.0 FROM generate_series(1, 70000) g",
        dbname=source,
    )
    target = unique_name("dst")
    pg.create_database(target)
    result = copy_database(pg.url(source), pg.url(target), jobs=2, verify=True)
    assert result.chunks == 1 and result.early_indexes == 1
    # TRUNCATE + COPY FREEZE in one transaction: all-visible before any VACUUM ran.
    ((all_visible, pages),) = pg.query(
        "SELECT relallvisible, relpages FROM pg_class WHERE relname = 'wide'", target
    )
    assert int(pages) > 1000 and int(all_visible) > 0.9 * int(pages)  # type: ignore[call-overload]
    assert _fingerprint(pg, source) == _fingerprint(pg, target)


def test_copy_splits_tables_into_ctid_ranges_and_builds_indexes_early(
    pg: Cluster, edge_source: str
) -> None:
    target = unique_name("dst")
    pg.create_database(target)
    result = copy_database(
        pg.url(edge_source), pg.url(target), jobs=3, verify=True, split_bytes=64 * 1024
    )
    assert result.chunks > result.tables  # some tables went in several ctid ranges
    assert result.early_indexes >= 3
    _assert_identical(pg, edge_source, pg, target)


def test_copy_from_15_to_18(pg15: Cluster, pg18: Cluster) -> None:
    source = _edge_db(pg15)
    target = unique_name("dst")
    pg18.create_database(target)
    result = copy_database(
        pg15.url(source), pg18.url(target), jobs=2, verify=True, split_bytes=128 * 1024
    )
    assert result.verification is not None and result.verification.equal
    _assert_identical(pg15, source, pg18, target, schema=False)


def _psql_children(loaders_only: bool = False) -> list[int]:
    """PIDs of our live psql children (optionally only those loading the target), via /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm != "psql" or int(ppid) != os.getpid() or state == "Z":
            continue
        if loaders_only and not any(b"FROM STDIN" in arg for arg in cmdline):
            continue
        found.append(int(entry.name))
    return found


def test_killed_worker_fails_cleanly_and_a_clean_rerun_succeeds(
    pg: Cluster, edge_source: str
) -> None:
    target = unique_name("dst")
    target_url = pg.url(target)
    pg.create_database(target)
    killed: list[int] = []

    def kill_loaders(event: CopyProgressReport) -> None:
        # A "bytes" report comes from a stream in flight: its loader is alive, mid-COPY.
        if event.event != "bytes" or killed:
            return
        for pid in _psql_children(loaders_only=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it finished its range meanwhile: the next report tries again
            killed.append(pid)

    started = time.monotonic()
    with pytest.raises(CopyError) as failure:
        copy_database(
            pg.url(edge_source),
            target_url,
            jobs=2,
            split_bytes=64 * 1024,
            progress=kill_loaders,
        )
    assert killed, "no loader was running to kill"
    message = str(failure.value)
    assert "SIGKILL" in message and "failed" in message
    assert "partial copy" in message and "clean=True" in message
    assert pg.password not in message
    assert time.monotonic() - started < 30
    assert _psql_children() == []  # every other worker was stopped too

    # The target is dirty: a plain re-run refuses, a clean one starts over and is exact.
    assert target_objects_count(pg, target) > 0
    with pytest.raises(CopyError, match="not empty"):
        copy_database(pg.url(edge_source), target_url, jobs=2)
    result = copy_database(pg.url(edge_source), target_url, jobs=2, clean=True, verify=True)
    assert result.verification is not None and result.verification.equal
    _assert_identical(pg, edge_source, pg, target)


def target_objects_count(cluster: Cluster, dbname: str) -> int:
    import psycopg2

    conn = psycopg2.connect(**PgURL.parse(cluster.url(dbname)).psycopg2_kwargs(10))
    try:
        return len(target_objects(conn))
    finally:
        conn.close()


def test_lock_held_on_source_hits_command_timeout(pg: Cluster, edge_source: str) -> None:
    import psycopg2

    target = unique_name("dst")
    pg.create_database(target)
    blocker = psycopg2.connect(**PgURL.parse(pg.url(edge_source)).psycopg2_kwargs(10))
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises((DatabaseError, CommandTimeoutError)) as failure:
            copy_database(pg.url(edge_source), pg.url(target), jobs=2, command_timeout=3)
        assert time.monotonic() - started < 20
        assert pg.password not in str(failure.value)
    finally:
        blocker.rollback()
        blocker.close()
    # Nothing was written: the lock wait happens before the schema is restored.
    assert target_objects_count(pg, target) == 0


def test_refuses_same_database_and_bad_jobs(pg: Cluster, edge_source: str) -> None:
    from render_rotator.errors import UsageError

    with pytest.raises(UsageError, match="same database"):
        copy_database(pg.url(edge_source), pg.url(edge_source))
    with pytest.raises(UsageError):
        copy_database(pg.url(edge_source), pg.url("x"), jobs=0)


def test_plan_chunks_splits_only_what_would_serialize_the_copy() -> None:
    mb = 1 << 20
    tables = [
        SourceTable(1, "public", "huge", 900 * mb, 115_000),
        SourceTable(2, "public", "mid", 80 * mb, 10_000),
        SourceTable(3, "public", "tiny", 1 * mb, 128),
        SourceTable(4, "public", "tiny2", 2 * mb, 256),
    ]
    chunks, _ = plan_chunks(tables, jobs=2, split_bytes=None, ctid_ranges=True)
    assert [c.table.name for c in chunks] == ["huge", "mid"]  # two jobs: whole, frozen
    chunks, batches = plan_chunks(tables, jobs=4, split_bytes=None, ctid_ranges=True)
    huge = [c for c in chunks if c.table.name == "huge"]
    assert len(huge) > 1  # larger than its fair share: split
    assert huge[0].low_block is None and huge[-1].high_block is None  # open-ended ends
    assert all(a.high_block == b.low_block for a, b in zip(huge, huge[1:], strict=False))
    assert [c.table.name for c in chunks if c.table.name != "huge"] == ["mid"]
    assert [[t.name for t in b] for b in batches] == [["tiny", "tiny2"]]
    chunks, _ = plan_chunks(tables, jobs=4, split_bytes=None, ctid_ranges=False)
    assert len([c for c in chunks if c.table.name == "huge"]) == 1  # no TID range scans


def test_parallel_directory_dump_and_restore(pg: Cluster, edge_source: str, tmp_path: Path) -> None:
    client = resolve_client()
    spec = archive.best_compression(client)
    assert spec in ("lz4", "zstd:1", "gzip:1", "1")
    source = PgURL.parse(pg.url(edge_source))
    info = archive.dump_parallel(
        client, source, tmp_path / "dump.dir", jobs=2, timeout=120, connect_timeout=10
    )
    assert info.format == "directory" and info.path.is_dir() and len(info.sha256) == 64
    assert info.toc_entries > 20
    target = unique_name("dst")
    pg.create_database(target)
    archive.restore_parallel(
        client,
        PgURL.parse(pg.url(target)),
        info.path,
        jobs=2,
        timeout=120,
        connect_timeout=10,
    )
    _assert_identical(pg, edge_source, pg, target)


def test_large_objects_travel_in_slices(pg: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large object larger than a slice (a bytea caps at 1 GB) arrives whole and exact."""
    from render_rotator.postgres import planning

    monkeypatch.setattr(planning, "LO_SLICE", 1000)
    source, target = unique_name("lo"), unique_name("lodst")
    pg.create_database(source)
    pg.create_database(target)
    pg.execute(
        "SELECT lo_from_bytea(5001, '');"  # empty
        "SELECT lo_from_bytea(5002, decode(repeat('ab', 1000), 'hex'));"  # exactly one slice
        "SELECT lo_from_bytea(5003, decode(repeat(md5('x'), 313), 'hex'));"  # 5008 bytes
        "SELECT lo_from_bytea(5004, decode(repeat(md5('y'), 63), 'hex'));",  # 1008 bytes
        dbname=source,
    )
    result = copy_database(pg.url(source), pg.url(target), jobs=2, verify=True)
    assert result.large_objects == 4
    contents = "SELECT oid, length(lo_get(oid)), md5(lo_get(oid)) FROM pg_largeobject_metadata"
    assert sorted(pg.query(contents, target)) == sorted(pg.query(contents, source))
    assert [row[1] for row in sorted(pg.query(contents, target))] == [0, 1000, 5008, 1008]


def test_reg_values_keep_their_schema_under_a_database_search_path(pg: Cluster) -> None:
    """A database-level search_path must not turn app.t into public.t on the way."""
    source, target = unique_name("sp"), unique_name("spdst")
    pg.create_database(source)
    pg.create_database(target)
    pg.execute(
        "CREATE SCHEMA app; CREATE TABLE app.t (x int); CREATE TABLE public.t (x int);"
        "CREATE TYPE app.kind AS ENUM ('a'); CREATE TYPE public.kind AS ENUM ('b');"
        "CREATE TABLE refs (c regclass, k regtype);"
        "INSERT INTO refs VALUES ('app.t', 'app.kind'), ('public.t', 'public.kind');"
        f'ALTER DATABASE "{source}" SET search_path = app, public',
        dbname=source,
    )
    copy_database(pg.url(source), pg.url(target), jobs=2)
    # read with an empty path, so every name prints schema-qualified
    query = "SELECT c::oid::regclass::text, k::oid::regtype::text FROM public.refs ORDER BY 1"
    got = pg.query(f"SET search_path = pg_catalog; {query}", target)
    assert got == [("app.t", "app.kind"), ("public.t", "public.kind")]
