"""Creating a free database while Render still counts the one just deleted.

A workspace may hold one free database. After the old one is deleted (delete-first, or
auto's fallback) Render may refuse a new free database for a while, exactly as it refuses a
second one. The create is retried with backoff until ``provision_timeout`` has passed since
the first refusal. The start of the wait is journaled, so a run that crashes while waiting
resumes into the same wait (same deadline); a wait that ran out ends, and a later `resume`
waits afresh. Each attempt is the client's duplicate-safe create, and provision looks for a
database under the new name before any create, so a resumed wait never makes two databases.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from render_rotator.errors import ConflictError, RotationError
from render_rotator.render import Postgres, is_free_tier_refusal
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.state import FreeSlotWait

log = logging.getLogger("render_rotator.rotation")

FIRST_RETRY = 0.25  # seconds; doubles up to MAX_RETRY
MAX_RETRY = 30.0


def create_when_slot_frees(ctx: Rotation, fields: dict[str, Any]) -> Postgres:
    """``create_postgres(**fields)``, waiting out Render's free-database refusals."""
    with contextlib.ExitStack() as waiting:
        return _create(ctx, fields, waiting)


def _create(ctx: Rotation, fields: dict[str, Any], waiting: contextlib.ExitStack) -> Postgres:
    state = ctx.state
    delay = FIRST_RETRY
    shown = False
    while True:
        try:
            created = ctx.client.create_postgres(**fields)
        except ConflictError as exc:
            if not is_free_tier_refusal(exc):
                raise
            now = time.time()
            wait = state.free_slot_wait
            if wait is None:
                wait = state.free_slot_wait = FreeSlotWait(since=now)
            wait.refusals += 1
            ctx.save()
            timeout = ctx.settings.provision_timeout
            remaining = wait.since + timeout - now
            if remaining <= 0:
                state.free_slot_waited, state.free_slot_wait = state.free_slot_wait, None
                ctx.save()
                raise RotationError(
                    f"Render still refuses a new free database {now - wait.since:.0f}s "
                    f"after the first refusal ({wait.refusals} attempts): {exc.message}",
                    hint="Render frees the slot of a deleted free database after a while: run "
                    "`render-rotator resume` later (it waits again), or raise provision_timeout; "
                    "check that no other free database holds the workspace's one free slot",
                ) from None
            if not shown:
                shown = True
                log.warning(
                    "Render refuses a new free database for now (%s); retrying for up to %gs",
                    exc.message,
                    timeout,
                )
                waiting.enter_context(ctx.ui.waiting("Render to free the free-database slot"))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY)
            continue
        if state.free_slot_wait is not None:
            ctx.report.notes.append(
                f"Render refused the new free database {state.free_slot_wait.refusals} "
                "time(s) while it freed the slot of the deleted one"
            )
            state.free_slot_waited, state.free_slot_wait = state.free_slot_wait, None
            ctx.save()
        return created
