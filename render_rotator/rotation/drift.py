"""Proof that the old database still holds exactly what was copied, before it is deleted.

A writer the freeze does not stop (a cron job with its own connection, a client that turns
read-only off for its session) can commit to the old database after the snapshot the copy
was taken from. Those rows exist nowhere else: deleting or retiring the old database would
lose them. `check_no_drift` compares a fresh fingerprint of the old database with the one
stored (in the journal and the backup manifest) for that snapshot, and raises DriftError
naming the tables that changed; the caller then keeps the old database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from render_rotator.errors import DriftError, RotationError
from render_rotator.postgres.fingerprint import Fingerprint, drift
from render_rotator.postgres.inventory import (
    Inventory,
    compare_inventories,
    take_inventory,
    take_inventory_in,
)
from render_rotator.rotation.state import DriftSummary

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")


def stored_fingerprint(ctx: Rotation) -> Fingerprint | None:
    """The fingerprint of the snapshot the copy was taken from (None: an older journal)."""
    data = ctx.state.fingerprint
    return Fingerprint.from_dict(data) if data else None


def old_database_changes(
    ctx: Rotation, *, sessions: Sequence[Any] = ()
) -> tuple[list[str], list[str]]:
    """(differences, changed tables) of the old database since the copy's snapshot, read
    through `sessions` when given (a sealed database takes no new one, postgres/seal.py)."""
    stored = stored_fingerprint(ctx)
    if stored is not None:
        return drift(
            ctx.old_url(),
            stored,
            jobs=ctx.settings.jobs,
            connect_timeout=ctx.settings.connect_timeout,
            statement_timeout=ctx.settings.command_timeout,
            sessions=list(sessions) or None,
        )
    if not ctx.state.inventory:
        raise RotationError(
            "no fingerprint of the copied snapshot is recorded, so the old database cannot be "
            "proven unchanged",
            hint="start a new rotation with `render-rotator rotate`",
        )
    # a journal from before fingerprints: the older, weaker row-count comparison
    before = Inventory.from_dict(ctx.state.inventory)
    if sessions:
        now = _inventory_through(sessions[0])
    else:
        now = take_inventory(
            ctx.old_url(),
            connect_timeout=ctx.settings.connect_timeout,
            statement_timeout=ctx.settings.command_timeout,
        )
    diffs = compare_inventories(before, now).differences
    tables = sorted(
        {d.split(":")[0].removeprefix("table ") for d in diffs if d.startswith("table ")}
    )
    return diffs, tables


def _inventory_through(conn: Any) -> Inventory:
    """An inventory in one snapshot of an open session, left open and as it was."""
    autocommit = conn.autocommit
    conn.autocommit = False
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        return take_inventory_in(conn)
    finally:
        conn.rollback()
        conn.set_session(isolation_level="DEFAULT", readonly="default")
        conn.autocommit = autocommit


def check_no_drift(ctx: Rotation, *, action: str, next_step: str) -> None:
    """Raise DriftError unless the old database is unchanged since the copy's snapshot.

    `action` says what was about to happen ("delete", "retire"), `next_step` what the user
    should do; both end up in the message. The old database is never touched here.
    """
    diffs, tables = old_database_changes(ctx)
    if not diffs:
        log.info("%s is unchanged since the copy's snapshot", ctx.state.old_id)
        return
    old_id = ctx.state.old_id
    where = ", ".join(tables) if tables else "; ".join(diffs[:3])
    ctx.state.drift = DriftSummary(tables=list(tables), differences=len(diffs))
    ctx.save()
    raise DriftError(
        f"refusing to {action} the old database {old_id}: it changed after the snapshot the "
        f"copy was taken from ({where}), so it holds writes the copy does not have; it was "
        f"kept. {next_step}",
        differences=[f"old database since the copy's snapshot: {d}" for d in diffs],
        tables=tables,
    )


__all__ = ["check_no_drift", "old_database_changes", "stored_fingerprint"]
