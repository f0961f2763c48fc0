"""Write freezes: stop the app writing to the old database while it is copied, and undo it.

suspend      suspend each affected service (default): nothing runs, nothing writes.
maintenance  Render's maintenance mode: the service stays up behind a maintenance page.
             Render has it for web services only: workers, private services and cron
             jobs are suspended instead (see rotation/services.py; static sites are left
             alone). Thaw undoes exactly what was done to each one.
readonly     the database itself refuses writes (default_transaction_read_only, and other
             sessions are ended so none keeps a read-write transaction open).
none         no freeze (explicit opt-out; verification still catches rows that differ).

We only ever undo what we did: a service someone had suspended before stays suspended. Each
freeze is also written in the rotation's lease (rotation/lease.py) before the call, so a run
that continues a dead one without its journal (a fresh machine) knows exactly which services
that run froze (`adopt_from_dead_run`); a half-done rotation found on Render whose lease says
nothing (an older version's) has its frozen services taken as ours.

Fencing: from the cutover until the old database is retired, it is made read-only, whatever
the freeze mode. Services resumed before their new deploy is live still run the old deploy
with the old URL; a write landing in the old database then would be silently lost when it is
deleted, so it fails instead. Landing back on the old database lifts the fence.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from psycopg2 import sql

from render_rotator.postgres.connect import connection
from render_rotator.rotation.services import freeze_action, service_types
from render_rotator.rotation.state import FrozenServices

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")


def freeze(ctx: Rotation, mode: str, frozen: FrozenServices) -> None:
    if mode in ("suspend", "maintenance"):
        _freeze_services(ctx, mode, frozen)
    elif mode == "readonly":
        frozen.readonly = True  # recorded first: a crash right after must still undo it
        frozen.readonly_reset = False
        ctx.save()
        set_read_only(
            ctx.old_url(), True, ctx.settings.connect_timeout, ctx.settings.command_timeout
        )
    else:
        log.warning(
            "freeze = none: writes are not stopped; if any reach the old database after the "
            "backup, verification refuses the cutover"
        )


def _is_frozen(ctx: Rotation, action: str, service_id: str) -> bool:
    """Whether the service is suspended (action "suspend") or in maintenance mode."""
    service = ctx.client.get_service(service_id)
    return bool(service.suspended if action == "suspend" else service.maintenance_mode_enabled)


def still_frozen(ctx: Rotation, named: dict[str, str]) -> list[str]:
    """Those of `named` (service id -> "suspend" / "maintenance") frozen that way now."""
    return [s for s, action in named.items() if _is_frozen(ctx, action, s)]


def _freeze_services(ctx: Rotation, mode: str, frozen: FrozenServices) -> None:
    """Suspend (or put in maintenance) each affected service we find running, each by its
    type: in maintenance mode, services other than web services are suspended instead.

    A service goes on the "pending" list before the call, so a run cut off between the call
    and the journal still knows that the frozen service it finds was frozen by us. It is
    recorded under what was done to it ("suspended" or "maintenance"), which thaw undoes.
    """
    pending = frozen.pending
    adopt = bool(ctx.state.adopt_frozen)
    thawed = frozen.thawed
    types = service_types(ctx)
    for service_id in ctx.affected_services():
        action = freeze_action(types.get(service_id, "web_service"), mode)
        if action is None:
            continue  # a static site: nothing runs there
        done = frozen.suspended if action == "suspend" else frozen.maintenance
        if service_id in done:
            # ours: a resumed run makes sure it still is frozen (a landing may have thawed
            # it without the journal knowing, or thawed it and recorded so)
            if _is_frozen(ctx, action, service_id):
                continue
            log.info("%s, frozen by this rotation, is running again: freezing it", service_id)
            if service_id in thawed:
                thawed.remove(service_id)
                ctx.save()
            _note_frozen(ctx, service_id, action)
            _call_freeze(ctx, action, service_id)
            continue
        already = _is_frozen(ctx, action, service_id)
        if already and service_id not in pending and not adopt:
            log.warning("%s was already frozen (%s): leaving it as it is", service_id, action)
            continue
        if already:
            log.info("%s is frozen by this rotation's earlier run: taking it as ours", service_id)
            _note_frozen(ctx, service_id, action)
        else:
            if service_id not in pending:
                pending.append(service_id)
                ctx.save()
            _note_frozen(ctx, service_id, action)
            _call_freeze(ctx, action, service_id)
        done.append(service_id)
        ctx.save()


def _note_frozen(ctx: Rotation, service_id: str, action: str) -> None:
    if ctx.lease is not None:
        ctx.lease.note_frozen(service_id, action)


def _note_thawed(ctx: Rotation, service_id: str) -> None:
    if ctx.lease is not None:
        ctx.lease.note_thawed(service_id)


def adopt_from_dead_run(ctx: Rotation) -> list[str]:
    """Right after this run took the lease: the services a dead run of this rotation froze,
    as its lease names them (`Lease.inherited`), become frozen by this rotation, thawed by
    its deploy or when it lands back on the old database. Only those still frozen the way
    that run froze them; a service the user suspended was never in that list. The lease's
    list is also brought in line with this journal, when there is one. Returns the ids
    adopted."""
    lease = ctx.lease
    if lease is None:
        return []
    state = ctx.state
    frozen = state.frozen
    adopted = []
    for service_id, action in lease.inherited.items():
        if frozen is not None and service_id in frozen.thawed:
            _note_thawed(ctx, service_id)  # this journal thawed it: the lease lagged behind
            continue
        if frozen is not None and service_id in frozen.suspended + frozen.maintenance:
            continue  # this journal knows it already
        if not _is_frozen(ctx, action, service_id):
            # the dead run was cut off before its freeze call, or thawed it since
            _note_thawed(ctx, service_id)
            continue
        if frozen is None:
            frozen = state.frozen = FrozenServices(mode=ctx.settings.freeze)
        (frozen.suspended if action == "suspend" else frozen.maintenance).append(service_id)
        adopted.append(service_id)
    if frozen is not None:  # what this journal froze and did not thaw: in the lease too
        for service_id in frozen.suspended:
            if service_id not in frozen.thawed:
                lease.keep_frozen(service_id, "suspend")
        for service_id in frozen.maintenance:
            if service_id not in frozen.thawed:
                lease.keep_frozen(service_id, "maintenance")
    if adopted:
        note = (
            f"{', '.join(adopted)} had been frozen by an interrupted run of this rotation (its "
            "lease names them): this run thaws them"
        )
        log.warning("%s", note)
        ctx.report.notes.append(note)
        ctx.save()
    return adopted


def _call_freeze(ctx: Rotation, mode: str, service_id: str) -> None:
    if mode == "suspend":
        ctx.client.suspend_service(service_id)
    else:
        ctx.client.set_maintenance_mode(service_id, True)


def set_read_only(url: str, on: bool, connect_timeout: float, command_timeout: float = 600) -> None:
    """Make the database refuse (or accept again) writes, for every new session."""
    with (
        connection(url, connect_timeout=connect_timeout, statement_timeout=command_timeout) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        cur.execute("SELECT current_database()")
        row = cur.fetchone()
        assert row is not None
        stmt = (
            "ALTER DATABASE {} SET default_transaction_read_only = on"
            if on
            else ("ALTER DATABASE {} RESET default_transaction_read_only")
        )
        cur.execute(sql.SQL(stmt).format(sql.Identifier(row[0])))
        if on:
            # Sessions opened before keep their read-write default: end them, then wait until
            # they are gone. Only our own role's (the app's) sessions: a non-superuser may not
            # end other roles' sessions, and on Render the app uses this role.
            cur.execute("SELECT clock_timestamp()")
            stamp = cur.fetchone()
            assert stamp is not None
            others = (
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND usename = current_user AND backend_start < %s"
            )
            cur.execute("SELECT pg_terminate_backend(pid) " + others, (stamp[0],))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cur.execute("SELECT count(*) " + others, (stamp[0],))
                left = cur.fetchone()
                if not left or not left[0]:
                    break
                time.sleep(0.05)


def fence(ctx: Rotation) -> None:
    """Make the old database read-only for the cutover (see the module docstring)."""
    if ctx.state.frozen is None:
        ctx.state.frozen = FrozenServices(mode="none")
    frozen = ctx.state.frozen
    if ctx.old is None or frozen.fenced:
        return
    frozen.fenced = True
    frozen.readonly_reset = False
    ctx.save()
    if not frozen.readonly:
        set_read_only(
            ctx.old_url(), True, ctx.settings.connect_timeout, ctx.settings.command_timeout
        )


def unfence(ctx: Rotation) -> None:
    """Let the old database take writes again (read-only freeze or fence), if it exists."""
    frozen = ctx.state.frozen
    if frozen is None or not (frozen.readonly or frozen.fenced) or frozen.readonly_reset:
        return
    if ctx.old is not None:
        set_read_only(
            ctx.old_url(), False, ctx.settings.connect_timeout, ctx.settings.command_timeout
        )
    frozen.readonly_reset = True
    ctx.save()


def thaw_services(ctx: Rotation, *, maintenance: bool = True) -> None:
    """Resume what we suspended and (unless told not to) take what we put in maintenance
    out of it, recording progress so a re-run skips what is done."""
    frozen = ctx.state.frozen
    if not frozen:
        return
    thawed = frozen.thawed
    # a service on the "pending" list may have been frozen by a call whose success the
    # journal never recorded (a crash, a full disk): it is ours too
    pending = [s for s in frozen.pending if s not in frozen.suspended + frozen.maintenance]
    mode = frozen.mode
    suspended = frozen.suspended + (pending if mode == "suspend" else [])
    in_maintenance = frozen.maintenance + (pending if mode == "maintenance" else [])
    # a run cut off between the call and the journal: check before undoing again
    for service_id in suspended:
        if service_id not in thawed:
            if _is_frozen(ctx, "suspend", service_id):
                ctx.client.resume_service(service_id)
            thawed.append(service_id)
            ctx.save()
            _note_thawed(ctx, service_id)
    if not maintenance:
        return
    for service_id in in_maintenance:
        if service_id not in thawed:
            if _is_frozen(ctx, "maintenance", service_id):
                ctx.client.set_maintenance_mode(service_id, False)
            thawed.append(service_id)
            ctx.save()
            _note_thawed(ctx, service_id)


def end_window(ctx: Rotation) -> None:
    """The write freeze is over: the app can write (to whichever database it now uses)."""
    frozen = ctx.state.frozen
    if frozen and frozen.in_window and frozen.ended_at is None:
        frozen.ended_at = time.time()
        ctx.save()


def thaw(ctx: Rotation) -> None:
    """Land back on the old database: undo everything we froze (only what we did)."""
    thaw_services(ctx)
    unfence(ctx)
    end_window(ctx)
