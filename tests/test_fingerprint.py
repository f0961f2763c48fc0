"""Verification by content on real PostgreSQL: every kind of difference is found and named."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from render_rotator.cli import cli
from render_rotator.errors import VerificationError
from render_rotator.postgres import fingerprint as fpmod
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.fingerprint import (
    Fingerprint,
    apply_settings,
    compare_fingerprints,
    take_fingerprint,
)
from render_rotator.postgres.inventory import verify_copy
from render_rotator.postgres.progress import CopyProgressReport
from render_rotator.sandbox.cluster import Cluster
from tests.rotation_support import execute
from tests.sample_data import RANGED_TABLE, make_rich_database, ranged_sums, unique_name

EXTRA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, mood mood, doc jsonb,
                     photo bytea, seen timestamptz, span interval, ratio float8,
                     kind regclass);
INSERT INTO people SELECT g, 'p' || g, 'ok', jsonb_build_object('k', g, 'a', g % 3),
       decode(md5(g::text), 'hex'), '2024-01-01 10:00+02'::timestamptz + g * interval '1 h',
       g * interval '90 minutes', g / 7.0, 'public.customers'::regclass
FROM generate_series(1, 300) g;
CREATE TABLE pairs (id int PRIMARY KEY, a int, b bigint, at timestamptz, ok bool);
INSERT INTO pairs SELECT g, g * 3, g * 5, '2024-01-01'::timestamptz + g * interval '1 s', g % 2 = 0
FROM generate_series(1, 200) g;
CREATE TABLE no_key (a int, b text);
INSERT INTO no_key SELECT g % 5, 'x' FROM generate_series(1, 20) g;
CREATE MATERIALIZED VIEW people_moods AS SELECT mood, count(*) FROM people GROUP BY mood;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER people_touch BEFORE UPDATE ON people FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE people ENABLE ROW LEVEL SECURITY;
CREATE POLICY people_all ON people USING (id > 0);
COMMENT ON TABLE people IS 'who is who';
SELECT lo_from_bytea(0, 'large object body');
"""


def _rich(cluster: Cluster) -> str:
    name = unique_name("fp")
    url = make_rich_database(cluster, name)
    cluster.execute(EXTRA, dbname=name)
    cluster.execute(f"ALTER DATABASE {name} SET work_mem = '7MB'")
    cluster.execute(f"""ALTER DATABASE {name} SET search_path = "$user", public, 'odd, one'""")
    return url


@pytest.fixture
def pair(pg: Cluster) -> Iterator[tuple[str, str, str]]:
    """A rich source and a verified copy of it; yields (source, target, target db name)."""
    source = _rich(pg)
    target_name = unique_name("fpt")
    target = pg.create_database(target_name)
    copy_database(source, target, jobs=2, verify=True)
    yield source, target, target_name
    for url in (source, target):
        name = url.rsplit("/", 1)[1].split("?")[0]
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_copy_verifies_equal_by_content_and_carries_settings(
    pair: tuple[str, str, str], pg: Cluster
) -> None:
    source, target, name = pair
    report = verify_copy(source, target, jobs=2)
    assert report.equal, report.differences
    assert report.mode == "content"
    compared = report.to_dict()["compared"]
    assert compared["tables"]["public.people"]["by"] == "checksum"
    assert report.source.tables["public.pairs"].method == "chained"
    assert report.source.tables["public.people"].method == "text"
    assert compared["definitions"]["indexes"] >= 5
    assert compared["large_objects"] == 1
    settings = take_fingerprint(target).settings
    assert settings["work_mem"] == "7MB"
    assert settings["search_path"] == take_fingerprint(source).settings["search_path"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # same row count, one value changed
        ("UPDATE customers SET email = 'x' || email WHERE id = 7", "table public.customers"),
        # values swapped between two rows: counts and the multiset of values per column equal
        (
            "UPDATE orders SET total = CASE id WHEN 1 THEN (SELECT total FROM orders WHERE id"
            " = 2) ELSE (SELECT total FROM orders WHERE id = 1) END WHERE id IN (1, 2)",
            "table public.orders",
        ),
        ("UPDATE people SET doc = doc || '{\"k\": -1}' WHERE id = 3", "table public.people"),
        # rows hashed by value (integer-like columns only): swapped values are found too
        ("UPDATE pairs SET a = CASE id WHEN 1 THEN 6 ELSE 3 END WHERE id IN (1, 2)", "pairs"),
        ("UPDATE pairs SET at = at + interval '1 microsecond' WHERE id = 9", "table public.pairs"),
        ("UPDATE no_key SET b = 'y' WHERE ctid = (SELECT min(ctid) FROM no_key)", "no_key"),
        ("SELECT setval('invoice_number_seq', 500)", "sequence public.invoice_number_seq"),
        ("SELECT nextval('customers_id_seq')", "sequence public.customers_id_seq"),
        (
            "DROP INDEX orders_customer_idx; CREATE INDEX orders_customer_idx ON orders "
            "(customer_id, id)",
            "index public.orders_customer_idx",
        ),
        ("ALTER TABLE orders ALTER COLUMN placed_at DROP DEFAULT", "column public.orders"),
        (
            "ALTER TABLE orders DROP CONSTRAINT orders_total_check; ALTER TABLE orders ADD "
            "CONSTRAINT orders_total_check CHECK (total > -1)",
            "constraint public.orders",
        ),
        (
            "CREATE OR REPLACE VIEW big_spenders AS SELECT c.email, sum(o.total) + 0 AS spent "
            "FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.email",
            "view public.big_spenders",
        ),
        (
            "CREATE OR REPLACE FUNCTION order_count(cid bigint) RETURNS bigint LANGUAGE sql "
            "STABLE AS $$ SELECT count(*) + 1 FROM orders WHERE customer_id = cid $$",
            "function public.order_count(bigint)",
        ),
        ("ALTER TABLE people DISABLE TRIGGER people_touch", "trigger public.people"),
        (
            "DROP POLICY people_all ON people; CREATE POLICY people_all ON people USING (id > 1)",
            "policy public.people",
        ),
        ("COMMENT ON TABLE people IS 'someone else'", "comment on table public.people"),
        ("ALTER TYPE mood ADD VALUE 'angry'", "type public.mood"),
        ("SELECT lo_put((SELECT min(oid) FROM pg_largeobject_metadata), 0, 'L')", "large object"),
        ("__setting__", "database setting work_mem"),
    ],
)
def test_every_difference_exits_3(
    pair: tuple[str, str, str], pg: Cluster, change: str, expected: str
) -> None:
    source, target, name = pair
    if change == "__setting__":
        pg.execute(f"ALTER DATABASE {name} SET work_mem = '8MB'")
    else:
        pg.execute(change, dbname=name)
    report = verify_copy(source, target, jobs=2)
    assert not report.equal
    assert any(expected in d for d in report.differences), report.differences
    result = CliRunner().invoke(cli, ["verify", source, target, "--json"])
    assert result.exit_code == 3, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is False and any(expected in d for d in out["differences"])


def test_large_table_mismatch_names_its_key_range(
    pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranged_sums(monkeypatch)
    name = unique_name("big")
    source = pg.create_database(name)
    pg.execute(RANGED_TABLE, dbname=name)
    tname = unique_name("bigt")
    target = pg.create_database(tname)
    copy_database(source, target, jobs=2, verify=True)
    pg.execute("UPDATE big SET body = 'changed' WHERE id = 10000", dbname=tname)
    report = verify_copy(source, target, jobs=2)
    [diff] = report.differences
    assert diff.startswith("table public.big: same 20000 rows but different contents in rows")
    low, high = diff.split("from ")[1].split(" to before ")
    assert int(low) <= 10000 < int(high)
    assert report.to_dict()["compared"]["tables"]["public.big"]["key_ranges"] > 2
    # a table summed on its own as soon as it is final (as the copy does while it runs)
    # gives the same sums as the whole fingerprint, and they are used in its place
    plan = fpmod.key_ranges(source, jobs=2)
    summer = fpmod.TableSummer(target, plan)
    summer.add("public", "big")
    known = summer.finish()
    assert known["public.big"] == take_fingerprint(target, like=plan).tables["public.big"]
    assert known["public.big"].chunks == report.target.tables["public.big"].chunks
    fake = {"public.big": fpmod.TableSum(rows=1, checksum="1")}
    assert take_fingerprint(target, like=plan, known=fake).tables["public.big"].rows == 1
    for n in (name, tname):
        pg.execute(f'DROP DATABASE "{n}" WITH (FORCE)')


def test_a_copys_verification_sums_whole_tables_and_ranges_only_a_table_that_differs(
    pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Summing by key range costs as much as hashing: the copy's own verification sums each
    table whole, and only a table that differs is summed again by range, to name where."""
    ranged_sums(monkeypatch)
    name = unique_name("whole")
    source = pg.create_database(name)
    pg.execute(
        RANGED_TABLE + "CREATE TABLE other (id int PRIMARY KEY, v text);"
        "INSERT INTO other SELECT g, 'v' || g FROM generate_series(1, 20000) g;",
        dbname=name,
    )
    assert fpmod.key_ranges(source).tables["public.big"].chunks  # large enough for ranges
    agreed = unique_name("whole_ok")
    result = copy_database(source, pg.create_database(agreed), jobs=2, verify=True)
    report = result.verification
    assert report is not None and report.equal, report.differences
    assert {t["key_ranges"] for t in report.to_dict()["compared"]["tables"].values()} == {0}

    # the target changed after its load, before its sums: a difference the copy must find
    differs = unique_name("whole_bad")
    target = pg.create_database(differs)

    def change_one_row(event: CopyProgressReport) -> None:
        if event.phase == "verify" and not changed:
            pg.execute("UPDATE big SET body = 'changed' WHERE id = 10000", dbname=differs)
            changed.append(True)

    changed: list[bool] = []
    with pytest.raises(VerificationError) as caught:
        copy_database(source, target, jobs=2, verify=True, progress=change_one_row)
    [diff] = caught.value.differences
    assert diff.startswith("table public.big: same 20000 rows but different contents in rows")
    low, high = diff.split("from ")[1].split(" to before ")
    assert int(low) <= 10000 < int(high)
    for n in (name, agreed, differs):
        pg.execute(f'DROP DATABASE "{n}" WITH (FORCE)')


def test_a_stored_fingerprint_is_compared_whole_and_ranges_named_only_where_it_differs(
    pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verify phase and the drift check compare a database with a stored, ranged
    fingerprint: tables summed whole first (a table's sum is its ranges' sum), by range
    only when one differs; a difference the first reading saw is never dropped."""
    ranged_sums(monkeypatch)
    name = unique_name("stored")
    url = pg.create_database(name)
    pg.execute(RANGED_TABLE, dbname=name)
    stored = Fingerprint.from_dict(take_fingerprint(url).to_dict(digests=True))
    assert len(stored.tables["public.big"].chunks) > 2
    now = fpmod.fingerprint_like(url, stored)
    assert now.tables["public.big"].chunks == [] and compare_fingerprints(stored, now) == []

    pg.execute("UPDATE big SET body = 'changed' WHERE id = 10000", dbname=name)
    diffs, tables = fpmod.drift(url, stored)
    assert tables == ["public.big"]
    [diff] = diffs
    assert diff.startswith("table public.big: same 20000 rows but different contents in rows")
    low, high = diff.split("from ")[1].split(" to before ")
    assert int(low) <= 10000 < int(high)

    # the change undone between the two readings: the first one's finding stands
    real = fpmod.take_fingerprint
    readings: list[Fingerprint] = []

    def undo_after_the_first(*args: object, **kwargs: object) -> Fingerprint:
        readings.append(real(*args, **kwargs))  # type: ignore[arg-type]
        if len(readings) == 1:
            pg.execute("UPDATE big SET body = repeat('b', 200) WHERE id = 10000", dbname=name)
        return readings[-1]

    monkeypatch.setattr(fpmod, "take_fingerprint", undo_after_the_first)
    diffs, tables = fpmod.drift(url, stored)
    assert len(readings) == 2 and tables == ["public.big"]
    assert diffs == ["table public.big: same 20000 rows but different contents"], diffs
    monkeypatch.setattr(fpmod, "take_fingerprint", real)
    assert fpmod.drift(url, stored) == ([], [])
    pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_copy_with_verify_raises_on_a_difference_it_cannot_carry(pg: Cluster) -> None:
    """A stored fingerprint compares with a fresh one; digests hide no difference."""
    source = _rich(pg)
    stored = Fingerprint.from_dict(take_fingerprint(source).to_dict(digests=True))
    assert all(v.startswith("sha256:") for v in stored.settings.values())
    assert compare_fingerprints(stored, take_fingerprint(source, like=stored)) == []
    dbname = source.rsplit("/", 1)[1].split("?")[0]
    pg.execute(f"ALTER DATABASE {dbname} SET work_mem = '9MB'")
    diffs = compare_fingerprints(stored, take_fingerprint(source, like=stored))
    assert diffs == ["database setting work_mem: (stored as a digest) on source, 9MB on target"]
    with pytest.raises(VerificationError):
        raise VerificationError("x", differences=diffs)
    pg.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')


def test_apply_settings_round_trips_list_values(pg: Cluster) -> None:
    name = unique_name("set")
    url = pg.create_database(name)
    apply_settings(url, {"search_path": '"$user", public, "odd, one"', "work_mem": "5MB"})
    got = take_fingerprint(url).settings
    assert got == {"search_path": '"$user", public, "odd, one"', "work_mem": "5MB"}
    pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_read_only_switch_is_not_part_of_the_fingerprint(pg: Cluster) -> None:
    name = unique_name("ro")
    url = pg.create_database(name)
    pg.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    assert take_fingerprint(url).settings == {}
    pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_counts_mode_is_weaker(pair: tuple[str, str, str], pg: Cluster) -> None:
    source, target, name = pair
    pg.execute("UPDATE customers SET email = 'x' || email WHERE id = 7", dbname=name)
    assert verify_copy(source, target, mode="counts").equal
    assert not verify_copy(source, target, mode="content").equal


def test_fifteen_to_eighteen_copy_verifies_equal(pg15: Cluster, pg18: Cluster) -> None:
    source = _rich(pg15)
    name = unique_name("up")
    target = pg18.create_database(name)
    result = copy_database(source, target, jobs=2, verify=True)
    assert result.verification is not None and result.verification.equal
    pg18.execute("UPDATE people SET ratio = ratio + 1e-12 WHERE id = 5", dbname=name)
    assert not verify_copy(source, target).equal


def test_a_query_cancel_stops_a_fingerprint_blocked_on_a_lock(fresh_db: str) -> None:
    """Ctrl-C during a backup: the fingerprint beside pg_dump must stop at once, not when its
    query, queued behind an app's lock, reaches the statement timeout (minutes)."""
    import threading

    import psycopg2

    from render_rotator.postgres.connect import QueryCancel
    from render_rotator.postgres.url import PgURL

    execute(fresh_db, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    holder = psycopg2.connect(**PgURL.parse(fresh_db).psycopg2_kwargs(10))
    holder.autocommit = False
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    cancel = QueryCancel()
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            take_fingerprint(fresh_db, statement_timeout=600, cancel=cancel)
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - what it raised is the result
            outcome.append(exc)

    thread = threading.Thread(target=take, daemon=True)
    try:
        thread.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
        for _ in range(1000):
            if execute(fresh_db, waiting)[0][0]:
                break
            thread.join(0.01)
        assert execute(fresh_db, waiting)[0][0] == 1, "the fingerprint never waited for the lock"
        cancel.set()
        thread.join(30)  # the statement timeout is 600 s: only the cancel ends it this soon
        assert not thread.is_alive(), "the fingerprint kept waiting after the cancel"
    finally:
        holder.rollback()
        holder.close()
    assert len(outcome) == 1 and outcome[0] is not None
    assert "cancel" in str(outcome[0]).lower(), outcome[0]


@pytest.mark.parametrize("held", [1, 3])
def test_a_fingerprint_through_held_sessions_equals_a_fresh_one(
    pair: tuple[str, str, str], held: int
) -> None:
    """A sealed database takes no new session (postgres/seal.py): its drift check reads it
    through the sessions that sealed it, alone or one holding the snapshot and the others
    summing. Same result; the sessions stay open, outside any transaction."""
    import psycopg2.extensions

    from render_rotator.postgres.connect import connect

    source = pair[0]
    fresh = take_fingerprint(source, jobs=2)
    sessions = [connect(source) for _ in range(held)]
    try:
        through = take_fingerprint(source, jobs=2, sessions=sessions, like=fresh)
        assert fpmod.compare_fingerprints(fresh, through) == []
        assert through.tables.keys() == fresh.tables.keys()
        for conn in sessions:
            assert conn.status == psycopg2.extensions.STATUS_READY
            assert conn.autocommit
            with conn.cursor() as cur:  # read-write again, as it was
                cur.execute("SHOW transaction_read_only")
                assert cur.fetchone() == ("off",)
    finally:
        for conn in sessions:
            conn.close()


VALUES_TABLE = """
CREATE TABLE vals (id int PRIMARY KEY, n numeric, j jsonb, f float8, t text, c char(3),
                   v varchar(10), i interval, d date, b bytea);
INSERT INTO vals SELECT g, 1.0, jsonb_build_object('a', 1.0, 'k', g), 0, 't' || g, 'ab',
       'v' || g, g * interval '1 h', date '2024-01-01' + g, decode(md5(g::text), 'hex')
FROM generate_series(1, 50) g;
"""


@pytest.fixture
def values_pair(pg: Cluster) -> Iterator[tuple[str, str, str]]:
    """A table of text, text-form and by-value columns, and a verified copy of it."""
    source_name, target_name = unique_name("fpv"), unique_name("fpvt")
    source = pg.create_database(source_name)
    pg.execute(VALUES_TABLE, dbname=source_name)
    target = pg.create_database(target_name)
    copy_database(source, target, jobs=2, verify=True)
    yield source, target, target_name
    for name in (source_name, target_name):
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    "change",
    [
        # equal by the type's own hash and equality, different by their text form
        "UPDATE vals SET n = 1.00 WHERE id = 4",
        "UPDATE vals SET j = jsonb_build_object('a', 1.00, 'k', 4) WHERE id = 4",
        "UPDATE vals SET f = '-0' WHERE id = 4",
        "UPDATE vals SET i = interval '1 day' WHERE id = 24",  # = 24 h, prints otherwise
        "UPDATE vals SET t = 't4 ' WHERE id = 4",
        "UPDATE vals SET v = 'V4' WHERE id = 4",
        "UPDATE vals SET c = 'abc' WHERE id = 4",
        # values swapped between two rows
        "UPDATE vals SET t = CASE id WHEN 1 THEN 't2' ELSE 't1' END WHERE id IN (1, 2)",
        "UPDATE vals SET d = NULL WHERE id = 4",
    ],
)
def test_rows_hashed_by_column_values_find_every_change(
    values_pair: tuple[str, str, str], pg: Cluster, change: str
) -> None:
    source, target, name = values_pair
    assert take_fingerprint(source).tables["public.vals"].method == "columns"
    pg.execute(change, dbname=name)
    report = verify_copy(source, target, jobs=2)
    assert not report.equal
    assert any("table public.vals" in d for d in report.differences), report.differences


CHAINED_TABLE = """
CREATE TABLE chain (id int PRIMARY KEY, big bigint NOT NULL, s smallint, ok boolean, u uuid,
                    o oid, n numeric, j jsonb, f float8, t text, c char(3), v varchar(10),
                    i interval, d date, ts timestamptz, nn int);
INSERT INTO chain SELECT g, g, g::smallint, g % 2 = 0, md5(g::text)::uuid, g, 1.0,
       jsonb_build_object('a', 1.0, 'k', g), 0, 't' || g, 'ab', 'v' || g, g * interval '1 h',
       date '2024-01-01' + g, timestamptz '2024-01-01 00:00+00' + g * interval '1 s',
       CASE WHEN g = 4 THEN 0 END
FROM generate_series(1, 50) g;
UPDATE chain SET big = 0, t = '' WHERE id = 5;
"""


@pytest.fixture(scope="module")
def chained_pair(pg: Cluster) -> Iterator[tuple[str, str]]:
    """A table of every column type "chained" hashes, and a verified copy of it (by name:
    each test changes a database made from it as a template)."""
    source_name, target_name = unique_name("fpc"), unique_name("fpct")
    source = pg.create_database(source_name)
    pg.execute(CHAINED_TABLE, dbname=source_name)
    copy_database(source, pg.create_database(target_name), jobs=2, verify=True)
    yield source, target_name
    for name in (source_name, target_name):
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE chain SET big = 4294967297 WHERE id = 5",  # same fold (hi ^ lo) as 0
        "UPDATE chain SET big = -1 WHERE id = 5",
        "UPDATE chain SET s = NULL WHERE id = 4",
        "UPDATE chain SET ok = NOT ok WHERE id = 4",
        "UPDATE chain SET u = md5('x')::uuid WHERE id = 4",
        "UPDATE chain SET o = 7 WHERE id = 4",
        "UPDATE chain SET n = 1.00 WHERE id = 4",  # equal as numeric, not by its text
        "UPDATE chain SET j = jsonb_build_object('a', 1.00, 'k', 4) WHERE id = 4",
        "UPDATE chain SET f = '-0' WHERE id = 4",
        "UPDATE chain SET t = NULL WHERE id = 5",  # '' -> NULL
        "UPDATE chain SET c = 'abc' WHERE id = 4",
        "UPDATE chain SET v = 'V4' WHERE id = 4",
        "UPDATE chain SET i = interval '1 day' WHERE id = 24",  # = 24 h, prints otherwise
        "UPDATE chain SET d = d + 1 WHERE id = 4",
        "UPDATE chain SET ts = ts + interval '1 microsecond' WHERE id = 4",
        "UPDATE chain SET nn = NULL WHERE id = 4",  # 0 -> NULL
        "UPDATE chain SET nn = 0 WHERE id = 3",  # NULL -> 0
        # values swapped between two rows
        "UPDATE chain SET t = CASE id WHEN 1 THEN 't2' ELSE 't1' END WHERE id IN (1, 2)",
        "UPDATE chain SET big = CASE id WHEN 1 THEN 2 ELSE 1 END WHERE id IN (1, 2)",
    ],
)
def test_rows_hashed_chained_find_every_change(
    chained_pair: tuple[str, str], pg: Cluster, change: str
) -> None:
    source, template = chained_pair
    name = unique_name("fpcc")
    target = pg.url(name)
    pg.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        plan = take_fingerprint(source)
        assert plan.tables["public.chain"].method == "chained"
        assert take_fingerprint(target, like=plan).tables == plan.tables  # equal before
        pg.execute(change, dbname=name)
        changed = take_fingerprint(target, like=plan).tables["public.chain"]
        assert changed.checksum != plan.tables["public.chain"].checksum, change
    finally:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_older_fingerprint_hashed_by_columns_is_compared_by_columns(
    chained_pair: tuple[str, str], pg: Cluster
) -> None:
    source, template = chained_pair
    older = take_fingerprint(source)
    older.tables["public.chain"].method = "columns"  # as stored before "chained"
    by_columns = take_fingerprint(source, like=older)
    assert by_columns.tables["public.chain"].method == "columns"
    again = take_fingerprint(pg.url(template), like=by_columns)
    assert again.tables["public.chain"].method == "columns"
    assert again.tables["public.chain"].checksum == by_columns.tables["public.chain"].checksum
    assert by_columns.tables["public.chain"].checksum != older.tables["public.chain"].checksum


def test_an_older_fingerprint_hashed_by_text_is_compared_by_text(
    values_pair: tuple[str, str, str],
) -> None:
    source, target, _name = values_pair
    older = take_fingerprint(source)
    older.tables["public.vals"].method = "text"  # as a fingerprint stored before "columns"
    older.tables["public.vals"].checksum = ""
    by_text = take_fingerprint(source, like=older)
    assert by_text.tables["public.vals"].method == "text"
    again = take_fingerprint(target, like=by_text)
    assert again.tables["public.vals"].method == "text"
    assert again.tables["public.vals"].checksum == by_text.tables["public.vals"].checksum
    assert (
        by_text.tables["public.vals"].checksum
        != take_fingerprint(source).tables["public.vals"].checksum
    )


def test_an_older_fingerprint_hashed_by_record_is_compared_by_record(
    values_pair: tuple[str, str, str], pg: Cluster
) -> None:
    source, target, name = values_pair
    source_name = source.rsplit("/", 1)[1].split("?")[0]
    for db in (source_name, name):
        pg.execute(
            "CREATE TABLE ints (id int PRIMARY KEY, a bigint);"
            "INSERT INTO ints SELECT g, g * 3 FROM generate_series(1, 100) g",
            dbname=db,
        )
    older = take_fingerprint(source)
    assert older.tables["public.ints"].method == "chained"
    older.tables["public.ints"].method = "record"  # as stored before "columns"
    by_record = take_fingerprint(source, like=older)
    assert by_record.tables["public.ints"].method == "record"
    again = take_fingerprint(target, like=by_record)
    assert again.tables["public.ints"].method == "record"
    assert again.tables["public.ints"].checksum == by_record.tables["public.ints"].checksum


def test_values_swapped_between_rows_change_the_sum(pg: Cluster, fresh_db: str) -> None:
    """The plain sum of hash_record_extended misses about two in three such swaps (that hash
    is linear in its columns' hashes); the "chained" hash mixes each row's columns."""
    name = fresh_db.rsplit("/", 1)[1].split("?")[0]
    pg.execute(
        "CREATE TABLE ints (id int PRIMARY KEY, a bigint);"
        "INSERT INTO ints SELECT g, g * 3 FROM generate_series(1, 40) g",
        dbname=name,
    )
    before = take_fingerprint(fresh_db).tables["public.ints"]
    assert before.method == "chained"
    missed = []
    for i in range(1, 40, 2):  # swap `a` between rows i and i + 1, then back
        swap = f"UPDATE ints SET a = CASE id WHEN {i} THEN {3 * i + 3} ELSE {3 * i} END"
        pg.execute(f"{swap} WHERE id IN ({i}, {i + 1})", dbname=name)
        if take_fingerprint(fresh_db).tables["public.ints"].checksum == before.checksum:
            missed.append(i)
        pg.execute(f"UPDATE ints SET a = id * 3 WHERE id IN ({i}, {i + 1})", dbname=name)
    assert missed == []
    assert take_fingerprint(fresh_db).tables["public.ints"].checksum == before.checksum
