"""Unit tests of the expiry rules, the allow-list explanation and the new database's fields;
the client's request body is checked with respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx

from render_rotator.config import load_config
from render_rotator.errors import AuthenticationError, ConnectError
from render_rotator.render import IPAllowEntry, Postgres, RenderClient
from render_rotator.render.expiry import RESCUE_PLAN, expiry_of
from render_rotator.rotation.access import admits_everyone, explain_unreachable
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.phases import _new_fields
from render_rotator.rotation.report import RotationReport
from render_rotator.rotation.state import DatabaseSpec, Rescue
from render_rotator.sandbox.emulator import LEGACY_POSTGRES_PLANS, POSTGRES_PLANS

BASE = "https://api.render.test/v1"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _pg(**fields: Any) -> Postgres:
    data: dict[str, Any] = {
        "id": "dpg-1-a",
        "name": "app-db",
        "status": "available",
        "plan": "free",
        "createdAt": "2026-05-20T12:00:00Z",
    }
    data.update(fields)
    return Postgres.from_api(data)


# -- expiry ----------------------------------------------------------------------------------


def test_expires_at_from_render_wins() -> None:
    expiry = expiry_of(_pg(expiresAt="2026-06-04T12:00:00Z"), NOW)
    assert expiry is not None and not expiry.computed and not expiry.expired
    assert expiry.days_left == pytest.approx(3)
    assert expiry.deleted_at == datetime(2026, 6, 18, 12, 0, tzinfo=UTC)


def test_without_expires_at_a_free_database_expires_30_days_after_creation() -> None:
    expiry = expiry_of(_pg(), NOW)
    assert expiry is not None and expiry.computed
    assert expiry.expires_at == datetime(2026, 6, 19, 12, 0, tzinfo=UTC)
    assert expiry.days_left == pytest.approx(18)


def test_an_expired_database_counts_down_to_its_deletion() -> None:
    expiry = expiry_of(_pg(createdAt="2026-04-22T12:00:00Z"), NOW)  # expired 2026-05-22
    assert expiry is not None and expiry.expired
    assert expiry.days_left == pytest.approx(-10)
    assert expiry.days_to_deletion == pytest.approx(4)
    assert expiry.deleted_at == datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


def test_paid_databases_do_not_expire() -> None:
    assert expiry_of(_pg(plan=RESCUE_PLAN), NOW) is None
    # nor is a stray expiresAt on a paid plan an expiry that suspends it
    stray = expiry_of(_pg(plan=RESCUE_PLAN, expiresAt="2026-05-01T00:00:00Z"), NOW)
    assert stray is not None and not stray.expired


# -- the allow list ------------------------------------------------------------------------------


def test_admits_everyone() -> None:
    assert admits_everyone([IPAllowEntry("0.0.0.0/0", "everywhere")])
    assert admits_everyone([IPAllowEntry("10.0.0.0/8"), IPAllowEntry("::/0")])
    assert not admits_everyone([])
    assert not admits_everyone([IPAllowEntry("203.0.113.0/24"), IPAllowEntry("not a cidr")])


def test_the_error_names_the_allow_list_only_when_it_can_be_the_cause() -> None:
    error = AuthenticationError("authentication failed for db: pg_hba.conf rejects connection")
    open_pg = _pg(ipAllowList=[{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}])
    assert explain_unreachable(open_pg, error) is error
    empty = explain_unreachable(_pg(ipAllowList=None), error)
    assert isinstance(empty, ConnectError)
    assert "its IP allow list is empty" in empty.message and "dpg-1-a" in empty.message
    assert "pg_hba.conf rejects" in empty.message  # the original words are kept
    assert empty.hint and "GitHub Actions" in empty.hint
    office = _pg(ipAllowList=[{"cidrBlock": "203.0.113.0/24", "description": "office"}])
    assert "(203.0.113.0/24)" in explain_unreachable(office, error).message
    plain = AuthenticationError("postgresql://u:***@h/d accepts only TLS connections, and ...")
    assert explain_unreachable(office, plain) is plain  # its own cause and fix are named


# -- the new database's fields -------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Rotation]:
    config = tmp_path / "render-rotator.toml"
    config.write_text('[[database]]\nname = "app-db"\n')
    cfg = load_config(config)
    client = RenderClient(api_key="rnd_unit", base_url=BASE)
    journal = Journal(path=tmp_path / "j.json", database="app-db", persist=False)
    rotation = Rotation(
        config=cfg,
        db=cfg.databases[0],
        client=client,
        journal=journal,
        report=RotationReport(database="app-db"),
    )
    rotation.state.owner_id = "tea-1"
    rotation.state.old_spec = DatabaseSpec(
        name="app-db",
        plan=RESCUE_PLAN,
        version="18",
        region="oregon",
        database_name="app",
        database_user="app",
        ip_allow_list=[],
    )
    yield rotation
    client.close()


def test_an_empty_allow_list_is_sent_as_an_empty_list(ctx: Rotation) -> None:
    # omitted, Render would open the new database to everyone; [] admits no one from outside
    assert _new_fields(ctx, "app-db-20260601")["ipAllowList"] == []
    ctx.state.known_spec.ip_allow_list = [{"cidrBlock": "1.2.3.4/32", "description": "me"}]
    assert _new_fields(ctx, "x")["ipAllowList"] == [
        {"cidrBlock": "1.2.3.4/32", "description": "me"}
    ]


def test_a_rescued_database_is_replaced_by_a_free_one(ctx: Rotation) -> None:
    assert _new_fields(ctx, "x")["plan"] == RESCUE_PLAN  # an ordinary paid rotation
    ctx.state.rescue = Rescue(plan="free", upgrade_to=RESCUE_PLAN)
    assert _new_fields(ctx, "x")["plan"] == "free"


def test_the_client_sends_an_empty_allow_list_as_is() -> None:
    with respx.MockRouter(base_url=BASE, assert_all_called=False) as router:
        router.get("/postgres").respond(200, json=[])
        route = router.post("/postgres").respond(
            201, json={"id": "dpg-2-a", "name": "x", "status": "creating", "plan": "free"}
        )
        with RenderClient(api_key="rnd_unit", base_url=BASE) as client:
            client.create_postgres(
                name="x", ownerId="tea-1", plan="free", version="18", ipAllowList=[]
            )
    assert json.loads(route.calls.last.request.content)["ipAllowList"] == []


def test_the_rescue_plan_is_a_paid_plan_new_databases_may_use() -> None:
    assert RESCUE_PLAN in POSTGRES_PLANS and RESCUE_PLAN not in LEGACY_POSTGRES_PLANS
    assert RESCUE_PLAN != "free"


def test_the_actions_status_summary_shows_when_render_deletes_an_expired_database() -> None:
    from render_rotator.github import status_markdown

    entry = {
        "name": "app-db",
        "id": "dpg-a",
        "status": "expired",
        "plan": "free",
        "expired": True,
        "deleted_at": "2026-06-05T12:00:00+00:00",
        "days_left": -10.0,
        "due": True,
    }
    row = status_markdown({"databases": [entry]}).splitlines()[-1]
    assert "| expired (deleted on 2026-06-05; rotate --rescue) |" in row
