"""The new database's fields (rotation/phases.py): the old one's allow list as it is (an
empty one stays empty), and a rescued database replaced by a free one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from render_rotator.config import load_config
from render_rotator.render import RenderClient
from render_rotator.render.expiry import RESCUE_PLAN
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.phases import _new_fields
from render_rotator.rotation.report import RotationReport
from render_rotator.rotation.state import DatabaseSpec, Rescue

BASE = "https://api.render.test/v1"


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
