"""Write freezes: stop the app writing to the old database while it is copied, and undo it.

suspend      suspend each affected service (default): nothing runs, nothing writes.
maintenance  Render's maintenance mode: the service stays up behind a maintenance page.
readonly     the database itself refuses writes (default_transaction_read_only, and other
             sessions are ended so none keeps a read-write transaction open).
none         no freeze (explicit opt-out; verification still catches rows that differ).

We only ever undo what we did: a service someone had suspended before stays suspended.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from render_rotator.postgres.connect import connection

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")


def freeze(ctx: Rotation, mode: str, frozen: dict[str, Any]) -> None:
    if mode == "suspend":
        for service_id in ctx.affected_services():
            if service_id in frozen["suspended"]:
                continue
            if ctx.client.get_service(service_id).suspended:
                log.warning("%s was already suspended: leaving it as it is", service_id)
                continue
            ctx.client.suspend_service(service_id)
            frozen["suspended"].append(service_id)
            ctx.save()
    elif mode == "maintenance":
        for service_id in ctx.affected_services():
            if service_id in frozen["maintenance"]:
                continue
            if ctx.client.get_service(service_id).maintenance_mode_enabled:
                log.warning("%s was already in maintenance mode: leaving it", service_id)
                continue
            ctx.client.set_maintenance_mode(service_id, True)
            frozen["maintenance"].append(service_id)
            ctx.save()
    elif mode == "readonly":
        set_read_only(ctx.old_url(), True, ctx.settings.connect_timeout)
        frozen["readonly"] = True
        ctx.save()
    else:
        log.warning(
            "freeze = none: writes are not stopped; rows written during the copy would be "
            "missing, and verification will refuse the cutover if they are"
        )


def set_read_only(url: str, on: bool, connect_timeout: float) -> None:
    """Make the database refuse (or accept again) writes, for every new session."""
    with connection(url, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
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
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            time.sleep(0.2)


def thaw(ctx: Rotation) -> None:
    """Undo our freeze (only what we did), recording progress so a re-run skips it."""
    frozen = ctx.state.get("frozen")
    if not frozen:
        return
    thawed = frozen.setdefault("thawed", [])
    for service_id in frozen.get("suspended", []):
        if service_id not in thawed:
            ctx.client.resume_service(service_id)
            thawed.append(service_id)
            ctx.save()
    for service_id in frozen.get("maintenance", []):
        if service_id not in thawed:
            ctx.client.set_maintenance_mode(service_id, False)
            thawed.append(service_id)
            ctx.save()
    if frozen.get("readonly") and not frozen.get("readonly_reset"):
        if ctx.old is not None:
            set_read_only(ctx.old_url(), False, ctx.settings.connect_timeout)
        frozen["readonly_reset"] = True
        ctx.save()
    if "started_at" in frozen and "ended_at" not in frozen:
        frozen["ended_at"] = time.time()
        ctx.save()
