"""The old database sealed around its deletion, so the last drift check sees what is deleted.

A client the freeze does not stop (its own connection with read-only turned off, or any
writer under freeze = suspend) could commit a row after the guard's drift check passed and
before Render's DELETE is done: that row would be lost, and the run would exit 0. So the
guard (rotation/guard.py) seals the old database first (postgres/seal.py: its connection
limit becomes the number of sessions this run holds, and every other session of the app's
role is ended), runs the check through those sessions, and keeps them open until Render has
deleted it. A session of another role that cannot be ended makes the guard refuse: the old
database is kept, nothing is lost.

The limit the database had is recorded in the journal (`state.sealed`) before it is
changed, and put back on every path that lands back on the old database: a failed check, a
refused or failed DELETE, an exception or an interrupt (`sealed_old`), and a run that finds
the record left by one that was killed (`lift_left_seal`, called when a rotation is resumed
or discarded, and by every landing).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from render_rotator.errors import RenderRotatorError, RotationError
from render_rotator.postgres.seal import (
    SealedDatabase,
    connection_limit,
    describe_sessions,
    open_sealed,
    restore_limit,
)
from render_rotator.rotation.state import SealRecord
from render_rotator.secrets import scrub

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")

#: Seconds to wait for the app role's other sessions to end once asked to.
END_WAIT = 10.0


class SealRefused(RotationError):
    """The old database could not be sealed (a session we may not end): it is kept."""


def _sessions(ctx: Rotation) -> int:
    """Sessions held while sealed: the fingerprint's, one holding its snapshot and `jobs`
    summing (as an unsealed fingerprint uses); one alone sums by itself."""
    jobs = ctx.settings.jobs
    return jobs + 1 if jobs > 1 else 1


@contextlib.contextmanager
def sealed_old(ctx: Rotation) -> Iterator[SealedDatabase]:
    """Seal the old database for the block; lift the seal on leaving it unless the old
    database is gone or its deletion was accepted (`state.old_deleted`)."""
    state = ctx.state
    old_id = state.known_old_id
    # every session the check needs is opened before the seal: sealed at fewer and grown
    # later, a client that reconnects in a loop takes the slots as they open
    db = open_sealed(
        ctx.old_url(),
        sessions=_sessions(ctx),
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    )
    try:
        left = state.sealed
        if left is not None and left.old_id == old_id:
            db.previous_limit = left.previous_limit  # the limit now may be a dead run's seal
        state.sealed = SealRecord(
            old_id=old_id,
            previous_limit=db.previous_limit,
            sessions=len(db.sessions),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        ctx.save()  # before the change: whoever lands back on it knows what to put back
        try:
            db.seal()
        except RenderRotatorError as exc:
            raise SealRefused(
                f"refusing to delete the old database {old_id}: it could not be sealed "
                f"against new sessions for the last check ({scrub(str(exc))}); it was kept",
                hint="its owner must be able to run ALTER DATABASE ... CONNECTION LIMIT; "
                "then run `render-rotator resume`",
            ) from None
        others = db.end_others(END_WAIT)
        if others:
            roles = sorted({s.user for s in others if s.user})
            raise SealRefused(
                f"refusing to delete the old database {old_id}: {describe_sessions(others)} "
                "cannot be ended by its owner"
                + (f" (role {', '.join(roles)})" if roles else "")
                + ", and could write to it after the last check; it was kept, nothing was "
                "deleted",
                hint="end those sessions (or stop whatever opens them), then run "
                "`render-rotator resume`",
            )
        yield db
    finally:
        _leave(ctx, db)


def _leave(ctx: Rotation, db: SealedDatabase) -> None:
    """Close our sessions; put the limit back unless the old database is going away."""
    state = ctx.state
    old_id = state.known_old_id
    going = state.old_deleted
    if not going and db.sealed:
        try:
            going = ctx.postgres(old_id) is None
        except RenderRotatorError as exc:  # cannot tell: it exists as far as we know
            log.info("could not re-read %s before lifting its seal: %s", old_id, exc)
    if going:
        db.close()
        state.sealed = None
        ctx.save()
        if ctx.lease is not None:
            ctx.lease.note_unsealed(old_id)
        return
    try:
        if db.sealed:
            db.restore()
    except RenderRotatorError as exc:
        note = (
            f"the old database {old_id} is still sealed (connection limit "
            f"{state.sealed.sessions if state.sealed else '?'}): {scrub(str(exc))}; "
            "`render-rotator resume` lifts it"
        )
        log.warning("%s", note)
        ctx.report.notes.append(note)
        db.close()
        return
    db.close()
    state.sealed = None
    ctx.save()
    if ctx.lease is not None:  # renew it there again (the guard stopped before sealing)
        ctx.lease.note_unsealed(old_id)
        with contextlib.suppress(RenderRotatorError):
            ctx.lease.acquire(old_id, ctx.old_url())


def limit_to_put_back(ctx: Rotation) -> int:
    """The old database's connection limit to restore after this run's seal: the journal's,
    when a stopped run of this rotation sealed it already, else the limit it has now."""
    left = ctx.state.sealed
    if left is not None and left.old_id == ctx.state.known_old_id:
        return left.previous_limit
    return connection_limit(
        ctx.old_url(),
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    )


def _put_back(ctx: Rotation, old_id: str, limit: int) -> bool:
    """Restore the old database's connection limit, if it still exists; True when done."""
    if ctx.state.old_deleted or ctx.postgres(old_id) is None:
        return False
    restore_limit(
        ctx.old_url(),
        limit,
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    )
    return True


def lift_inherited_seal(ctx: Rotation) -> bool:
    """A dead run's lease (read when this run took it over, rotation/lease.py) says it sealed
    the old database: put its connection limit back, journal or not. True when lifted."""
    lease = ctx.lease
    old_id = ctx.state.old_id
    if lease is None or old_id is None or old_id not in lease.inherited_seals:
        return False
    limit = lease.inherited_seals[old_id]
    lifted = _put_back(ctx, old_id, limit)
    if lifted:
        log.warning(
            "lifted the seal an interrupted run left on %s (its lease names it): connection "
            "limit %d again",
            old_id,
            limit,
        )
    lease.note_unsealed(old_id)
    return lifted


def lift_left_seal(ctx: Rotation) -> bool:
    """A run killed while the old database was sealed left it so (the journal says): put
    its connection limit back, if it still exists. True when a seal was lifted."""
    state = ctx.state
    left = state.sealed
    if left is None:
        return False
    lifted = left.old_id == state.old_id and _put_back(ctx, left.old_id, left.previous_limit)
    if lifted:
        log.info(
            "lifted the seal a stopped run left on %s (connection limit %d again)",
            left.old_id,
            left.previous_limit,
        )
    state.sealed = None  # lifted, or gone with the database
    ctx.save()
    return lifted


__all__ = [
    "SealRefused",
    "lift_inherited_seal",
    "lift_left_seal",
    "limit_to_put_back",
    "sealed_old",
]
