"""The emulator's expiry, upgrade, IP allow list and free-slot refusals, over real HTTP with
real logins against the cluster (no sleeping: the emulator's clock is moved instead)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg2
import pytest

from render_rotator.sandbox import Cluster, RenderEmulator
from render_rotator.sandbox.emulator import (
    FREE_TIER_LIMIT_MESSAGE,
    IN_PROCESS_URL,
    ManualClock,
    expires_in,
)
from render_rotator.sandbox.seed import create_postgres

DAY = 86400.0
EVERYWHERE = [{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}]


@pytest.fixture
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    e = RenderEmulator(pg, provision_delay=0.05, deploy_delay=0.05, clock=ManualClock())
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def api(emu: RenderEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    transport = httpx.WSGITransport(app=emu.app)
    with httpx.Client(transport=transport, base_url=IN_PROCESS_URL, headers=headers) as client:
        yield client


def _free(emu: RenderEmulator, **fields: Any) -> dict[str, Any]:
    return create_postgres(emu, f"db-{len(emu.postgres_ids())}", emu.default_owner_id, **fields)


def _login_error(emu: RenderEmulator, postgres_id: str) -> str | None:
    """None when the external string logs in and runs a query; else libpq's message."""
    url = emu.connection_info(postgres_id)["externalConnectionString"]
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        return str(exc)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()
    return None


def _body(api: httpx.Client, emu: RenderEmulator, **fields: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "ownerId": emu.default_owner_id,
        "plan": "free",
        "version": str(emu.cluster.major),
        **fields,
    }


# -- expiry ------------------------------------------------------------------------------------


def test_an_expired_free_database_is_suspended_then_deleted_14_days_later(
    emu: RenderEmulator, api: httpx.Client, pg: Cluster
) -> None:
    db = _free(emu)
    assert _login_error(emu, db["id"]) is None
    emu.set_expires_at(db["id"], expires_in(-1))  # expired yesterday
    seen = api.get(f"/postgres/{db['id']}").json()
    assert seen["status"] == "suspended" and seen["suspended"] == "suspended"
    assert seen["suspenders"] == ["billing"]
    assert "not permitted to log in" in (_login_error(emu, db["id"]) or "")
    listed = api.get("/postgres", params={"suspended": "suspended"}).json()
    assert [item["postgres"]["id"] for item in listed] == [db["id"]]
    # a resume does not bring an expired database back: only an upgrade does
    assert api.post(f"/postgres/{db['id']}/resume").status_code == 202
    assert _login_error(emu, db["id"]) is not None

    emu.advance_clock(12 * DAY)  # 13 days after expiry: still there
    assert api.get(f"/postgres/{db['id']}").status_code == 200
    emu.advance_clock(1.5 * DAY)  # past 14 days: gone, with its real database and role
    assert api.get(f"/postgres/{db['id']}").status_code == 404
    assert not pg.query(f"SELECT 1 FROM pg_database WHERE datname = '{db['databaseName']}'")
    assert not pg.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{db['databaseUser']}'")


def test_without_expires_at_a_free_database_expires_30_days_after_creation(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    db = _free(emu)
    emu.set_expires_at(db["id"], None)
    emu.set_created_at(db["id"], datetime.now(UTC) - timedelta(days=29))
    seen = api.get(f"/postgres/{db['id']}").json()
    assert "expiresAt" not in seen and seen["status"] == "available"
    emu.advance_clock(1.1 * DAY)
    assert api.get(f"/postgres/{db['id']}").json()["status"] == "suspended"


def test_the_clock_moves_expiry_of_new_databases_with_it(emu: RenderEmulator) -> None:
    emu.advance_clock(100 * DAY)
    db = _free(emu)  # created "now" on the moved clock: 30 days to go, not expired
    assert db["status"] == "available"
    created = datetime.fromisoformat(db["createdAt"].replace("Z", "+00:00"))
    assert created > datetime.now(UTC) + timedelta(days=99)
    with pytest.raises(ValueError):
        emu.advance_clock(-1)


def test_an_upgrade_to_a_paid_plan_restores_access_and_clears_expires_at(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    db = _free(emu)
    url = emu.connection_info(db["id"])["externalConnectionString"]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    conn.close()
    emu.set_expires_at(db["id"], expires_in(-3))
    assert _login_error(emu, db["id"]) is not None

    patched = api.patch(f"/postgres/{db['id']}", json={"plan": "basic_256mb"})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["plan"] == "basic_256mb" and "expiresAt" not in body
    assert body["status"] == "updating_instance" and body["suspended"] == "not_suspended"
    emu.wait_for_postgres(db["id"], "available", 10)
    assert _login_error(emu, db["id"]) is None
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchall() == [(42,)]
    conn.close()
    # a paid database never expires: the clock moving on changes nothing
    emu.advance_clock(60 * DAY)
    assert api.get(f"/postgres/{db['id']}").json()["status"] == "available"
    # and it cannot go back to free
    assert api.patch(f"/postgres/{db['id']}", json={"plan": "free"}).status_code == 400


# -- the one free slot after a delete ----------------------------------------------------------


def test_a_deleted_free_database_slot_is_refused_for_n_attempts(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    emu.faults.refuse_free_after_delete(n=2)
    paid_first = _free(emu, plan="basic_256mb")  # deleting a paid database frees no slot
    emu.delete_postgres(paid_first["id"])
    old = _free(emu)
    second = api.post("/postgres", json=_body(api, emu))
    assert second.status_code == 400 and second.json()["message"] == FREE_TIER_LIMIT_MESSAGE
    emu.delete_postgres(old["id"])
    for _ in range(2):
        refused = api.post("/postgres", json=_body(api, emu))
        assert refused.status_code == 400
        assert refused.json()["message"] == FREE_TIER_LIMIT_MESSAGE  # as Render says it
    # paid databases are not affected; the third free attempt gets the slot
    assert api.post("/postgres", json=_body(api, emu, plan="basic_256mb")).status_code == 201
    assert api.post("/postgres", json=_body(api, emu)).status_code == 201
    assert emu.faults.describe()["refuse_free_after_delete"] == {"n": 2, "seconds": None}


def test_a_deleted_free_database_slot_is_refused_for_t_seconds(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    emu.faults.apply({"fault": "refuse_free_after_delete", "seconds": 600})
    emu.delete_postgres(_free(emu)["id"])
    for _ in range(3):
        assert api.post("/postgres", json=_body(api, emu)).status_code == 400
    emu.advance_clock(601)
    assert api.post("/postgres", json=_body(api, emu)).status_code == 201
    with pytest.raises(ValueError):
        emu.faults.refuse_free_after_delete()
    emu.faults.clear()
    assert emu.faults.describe()["refuse_free_after_delete"] is None


# -- the IP allow list -------------------------------------------------------------------------


def test_allow_list_omitted_is_everywhere_and_empty_shuts_out(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    opened = api.post("/postgres", json=_body(api, emu, plan="basic_256mb")).json()
    null = api.post("/postgres", json=_body(api, emu, plan="basic_256mb", ipAllowList=None))
    closed = api.post("/postgres", json=_body(api, emu, plan="basic_256mb", ipAllowList=[]))
    assert opened["ipAllowList"] == EVERYWHERE and null.json()["ipAllowList"] == EVERYWHERE
    assert closed.json()["ipAllowList"] is None  # Render answers null for [] (recorded)
    closed_id = closed.json()["id"]
    emu.wait_for_postgres(closed_id, "available", 10)
    emu.wait_for_postgres(opened["id"], "available", 10)
    assert _login_error(emu, opened["id"]) is None
    assert "pg_hba.conf rejects" in (_login_error(emu, closed_id) or "")
    # the internal URL (the sandbox's private network) still connects, as inside Render
    internal = emu.connection_info(closed_id)["internalConnectionString"]
    psycopg2.connect(internal, connect_timeout=5).close()

    # a list that admits this machine lets it in; one that does not shuts it out again
    here = [{"cidrBlock": "127.0.0.1/32", "description": "this machine"}]
    assert api.patch(f"/postgres/{closed_id}", json={"ipAllowList": here}).status_code == 200
    assert _login_error(emu, closed_id) is None
    office = [{"cidrBlock": "203.0.113.0/24", "description": "office"}]
    assert api.patch(f"/postgres/{closed_id}", json={"ipAllowList": office}).status_code == 200
    assert "pg_hba.conf rejects" in (_login_error(emu, closed_id) or "")
    assert emu.postgres(closed_id)["ipAllowList"] == office
    # deleting it removes its rule; the emulator's stop leaves pg_hba.conf as it found it
    emu.delete_postgres(closed_id)
    assert _login_error(emu, opened["id"]) is None


def test_stop_removes_the_allow_list_rules(pg: Cluster) -> None:
    before = (pg.data_dir / "pg_hba.conf").read_text()
    with RenderEmulator(pg, provision_delay=0.0) as emu:
        create_postgres(emu, "closed", emu.default_owner_id, ipAllowList=[])
        assert (pg.data_dir / "pg_hba.conf").read_text() != before
    assert (pg.data_dir / "pg_hba.conf").read_text() == before
