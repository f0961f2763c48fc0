"""When a free Render database expires, and what is left of it afterwards.

Render suspends a free database at its ``expiresAt`` (30 days after creation; the API may
omit ``expiresAt``, then it is ``createdAt`` + 30 days) and deletes it 14 days later. While
suspended it cannot be read; upgrading it to a paid plan restores access. These rules live
here, once, for ``status``, the due check and ``rotate --rescue``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .models import Postgres

__all__ = [
    "DELETION_GRACE_DAYS",
    "FREE_TIER_DAYS",
    "RESCUE_PLAN",
    "Expiry",
    "expiry_of",
]

FREE_TIER_DAYS = 30
DELETION_GRACE_DAYS = 14
#: The cheapest paid plan in Render's ``plan`` enum that new databases may use (the legacy
#: ``starter`` is refused): what ``rotate --rescue`` upgrades an expired database to.
RESCUE_PLAN = "basic_256mb"


@dataclass(frozen=True)
class Expiry:
    """A database's expiry as of ``now``: when, whether it has passed, when Render deletes it."""

    expires_at: datetime
    deleted_at: datetime
    expired: bool
    days_left: float  # negative once expired
    computed: bool  # True when Render gave no expiresAt (createdAt + 30 days)

    @property
    def days_to_deletion(self) -> float:
        return self.days_left + DELETION_GRACE_DAYS


def expiry_of(pg: Postgres, now: datetime | None = None) -> Expiry | None:
    """The expiry of `pg`, or None for a database that does not expire (paid plans)."""
    now = now or datetime.now(UTC)
    when, computed = pg.expires_at, False
    if when is None:
        if not pg.is_free or pg.created_at is None:
            return None
        when, computed = pg.created_at + timedelta(days=FREE_TIER_DAYS), True
    days = (when - now).total_seconds() / 86400
    return Expiry(
        expires_at=when,
        deleted_at=when + timedelta(days=DELETION_GRACE_DAYS),
        expired=pg.is_free and days <= 0,
        days_left=days,
        computed=computed,
    )
