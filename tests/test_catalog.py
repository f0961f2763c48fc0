"""One definition of "the user's objects", so every part of the engine counts the same."""

from __future__ import annotations

from render_rotator.postgres.catalog import (
    export_snapshot,
    is_superuser,
    read_sequences,
    read_source,
)
from render_rotator.postgres.connect import connection
from render_rotator.postgres.fingerprint import take_fingerprint
from render_rotator.postgres.inventory import take_inventory
from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import unique_name


def test_an_extension_member_is_nobody_s_object_and_a_user_sequence_everybody_s(
    pg: Cluster,
) -> None:
    """A sequence an extension owns (recreated by the extension, never copied) is in none of
    the copy's plan, the fingerprint or the inventory; the user's own sequence is in all."""
    db = unique_name("cat")
    pg.create_database(db)
    pg.execute(
        "CREATE SEQUENCE public.mine; SELECT nextval('public.mine');"
        "CREATE SEQUENCE public.owned_by_ext; SELECT setval('public.owned_by_ext', 42);"
        "ALTER EXTENSION plpgsql ADD SEQUENCE public.owned_by_ext;"
        "CREATE TABLE public.t (id int PRIMARY KEY)",
        dbname=db,
    )
    url = PgURL.parse(pg.url(db))
    with connection(url, connect_timeout=10, autocommit=False) as conn:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        plan = read_source(conn)
        values = read_sequences(conn, plan.sequences)
    assert plan.sequences == [("public", "mine")]
    assert [name for name, _value, _called in values] == ['"public"."mine"']
    assert [t.label for t in plan.tables] == ["public.t"]

    fingerprint = take_fingerprint(url, connect_timeout=10)
    assert list(fingerprint.sequences) == ["public.mine"]

    inventory = take_inventory(url, connect_timeout=10)
    assert list(inventory.sequences) == ["public.mine"]
    assert inventory.objects["sequences"] == 1


def test_superuser_check_and_snapshot_export(pg: Cluster) -> None:
    db = unique_name("snap")
    pg.create_database(db)
    url = PgURL.parse(pg.url(db))
    with connection(url, connect_timeout=10) as conn:
        assert is_superuser(conn) is True  # the test cluster's own role
    with connection(url, connect_timeout=10, autocommit=False) as conn:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            snapshot = export_snapshot(cur)
        with connection(url, connect_timeout=10, autocommit=False) as other, other.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
