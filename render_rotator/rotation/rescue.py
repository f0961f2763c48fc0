"""An expired free database: explain the way out, or rescue it (``rotate --rescue``).

Render suspends a free database when it expires (it cannot be read) and deletes it 14 days
later. Upgrading it to a paid plan restores access, so ``--rescue`` (an explicit opt-in: the
paid plan costs a few cents for the hour or so the rotation takes) upgrades it to the
cheapest paid plan, rotates create-first into a new FREE database, and deletes the paid one
after the usual checks. Without ``--rescue`` rotate stops and says what can be done.

``--rescue`` only permits that: a database that has not expired is rotated as usual, so a
scheduled ``rotate --if-expiring-within --rescue`` may carry it. A rescue that stopped before
the cutover after its upgrade leaves a marker in the state directory; ``rotate --rescue``
then finishes it (the paid database is moved into a free one without upgrading again).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from render_rotator.errors import RotationError
from render_rotator.render import Postgres
from render_rotator.render.expiry import RESCUE_PLAN, Expiry
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.state import Rescue

log = logging.getLogger("render_rotator.rotation")

FIRST_POLL = 0.25


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def latest_backup(backup_dir: Path, postgres_id: str) -> Path | None:
    """The newest archive this tool took of `postgres_id` in `backup_dir`, if any."""
    try:
        found = list(backup_dir.glob(f"*-{postgres_id}-*.dump"))
        return max(found, key=lambda p: p.stat().st_mtime, default=None)
    except OSError:
        return None


def check_expiry(ctx: Rotation, old: Postgres, expiry: Expiry | None) -> None:
    """Stop (with the way out) on an expired database unless rescuing; record a rescue."""
    state = ctx.state
    if state.rescue:
        return  # resuming a rescue: the database was (being) upgraded
    if expiry is not None and expiry.expired:
        if not ctx.rescue:
            backup = latest_backup(ctx.settings.backup_dir, old.id)
            restore = (
                f"`render-rotator restore NEW_DATABASE_URL {backup}` (your latest backup of it)"
                if backup
                else f"`render-rotator restore` from a backup in {ctx.settings.backup_dir}"
            )
            raise RotationError(
                f"{old.name} ({old.id}) expired on {_day(expiry.expires_at)}: Render suspended "
                "it, so it cannot be read or rotated as it is; Render deletes it on "
                f"{_day(expiry.deleted_at)} ({max(expiry.days_to_deletion, 0):.1f} days left)",
                hint=f"run `render-rotator rotate --rescue` to upgrade it to {RESCUE_PLAN} (a "
                "paid plan: a few cents) so it can be copied into a new free database, after "
                f"which it is deleted; or restore with {restore}",
            )
        _start(ctx, old, expiry)
    elif ctx.rescue and pending(ctx) == old.id and old.plan == RESCUE_PLAN:
        # an earlier rescue upgraded it, then landed back on it: finish moving it to free
        _start(ctx, old, None)
    elif ctx.rescue:
        ctx.report.notes.append(
            f"{old.id} has not expired: rotated as usual (--rescue had nothing to rescue)"
        )


def _start(ctx: Rotation, old: Postgres, expiry: Expiry | None) -> None:
    state = ctx.state
    state.rescue = Rescue(
        plan="free",
        upgrade_to=RESCUE_PLAN,
        expired_at=expiry.expires_at.isoformat() if expiry else None,
        deleted_at=expiry.deleted_at.isoformat() if expiry else None,
        upgraded=old.plan == RESCUE_PLAN,
    )
    state.requested_strategy = state.strategy = "create-first"
    ctx.report.notes.append(
        f"rescue: {old.id} is upgraded to {RESCUE_PLAN} to regain access, copied into a new "
        "free database, then deleted"
    )


def _marker(ctx: Rotation) -> Path:
    journal = Journal.path_for(ctx.settings.state_dir, ctx.db.label)
    return journal.with_name(journal.name.replace(".journal.json", ".rescue.json"))


def pending(ctx: Rotation) -> str | None:
    """The id of a database an earlier rescue upgraded but did not finish moving."""
    try:
        return str(json.loads(_marker(ctx).read_text())["postgres_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_pending(ctx: Rotation) -> None:
    """After landing back on an upgraded database: `rotate --rescue` may finish it."""
    rescue = ctx.state.rescue
    if rescue is not None and (rescue.upgraded or rescue.upgrading):
        path = _marker(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"postgres_id": ctx.state.old_id, "plan": rescue.upgrade_to}) + "\n"
        )


def forget_pending(ctx: Rotation) -> None:
    if ctx.state.rescue:
        _marker(ctx).unlink(missing_ok=True)


def upgrade(ctx: Rotation) -> Postgres:
    """Upgrade the expired database to the rescue plan and wait until it is available."""
    state = ctx.state
    rescue = state.rescue
    assert rescue is not None
    old_id = state.known_old_id
    old = ctx.old
    if old is None:
        raise RotationError(
            f"the expired database {old_id} no longer exists on Render (it is deleted 14 days "
            "after it expires)",
            hint=f"restore a backup from {ctx.settings.backup_dir} with `render-rotator restore`",
        )
    if old.is_free:
        rescue.upgrading = True  # journaled before the change on Render
        ctx.save()
        ctx.client.update_postgres(old_id, plan=rescue.upgrade_to)
        log.warning("upgraded %s to %s to regain access to its data", old_id, rescue.upgrade_to)
    rescue.upgraded = True
    ctx.save()
    with ctx.ui.waiting(f"{old_id} to become available on {rescue.upgrade_to}"):
        old = ctx.client.wait_for_postgres(
            old_id,
            status="available",
            timeout=ctx.settings.provision_timeout,
            poll_interval=FIRST_POLL,
        )
    ctx.set_old(old)
    return old
