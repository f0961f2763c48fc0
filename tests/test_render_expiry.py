"""The expiry rules (render/expiry.py): Render's expiresAt, or 30 days after creation for a
free database; the countdown to deletion; paid plans, and the plan a rescue moves to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from render_rotator.render.expiry import RESCUE_PLAN, expiry_of
from render_rotator.sandbox.emulator import LEGACY_POSTGRES_PLANS, POSTGRES_PLANS
from tests.render_records import postgres_record as _pg

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


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


def test_the_rescue_plan_is_a_paid_plan_new_databases_may_use() -> None:
    assert RESCUE_PLAN in POSTGRES_PLANS and RESCUE_PLAN not in LEGACY_POSTGRES_PLANS
    assert RESCUE_PLAN != "free"
