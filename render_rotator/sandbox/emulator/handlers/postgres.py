"""``/postgres``: databases, their connection info, plan changes, suspension and expiry.

Creating one makes a real role and database (`Provisioner`); its record turns ``available``
`provision_delay` seconds later on the emulator's clock. A free database past its expiry is
suspended (its role may not log in) and deleted 14 days later (`expire`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from render_rotator.sandbox.emulator.http import (
    SEG,
    EmulatorAPIError,
    Reply,
    Request,
    Route,
    bad_request,
    found,
    not_found,
    page,
    time_param,
)
from render_rotator.sandbox.emulator.records import (
    DELETION_GRACE,
    EVERYWHERE,
    FREE_PLAN,
    FREE_TIER_DAYS,
    FREE_TIER_LIMIT_MESSAGE,
    IDENT,
    LEGACY_PLAN_MESSAGE,
    LEGACY_POSTGRES_PLANS,
    POSTGRES_PLANS,
    POSTGRES_VERSIONS,
    REGIONS,
    Postgres,
    ident,
    iso,
    new_id,
    password,
    suffix,
)

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator

log = logging.getLogger("render_rotator.sandbox.emulator")


# -- answers -----------------------------------------------------------------------------------


def get_pg(emu: RenderEmulator, postgres_id: str) -> Postgres:
    pg = found(emu.state.postgres, postgres_id)
    return pg


def status(emu: RenderEmulator, pg: Postgres, now: float) -> str:
    if pg.suspended or pg.expired:
        return "suspended"
    if now < pg.updating_until:
        return "updating_instance"
    if not pg.provisioned:
        return "creating"
    if pg.held:
        if emu.faults.never_available_enabled:
            return "creating"
        pg.held = False
        pg.ready_at = min(pg.ready_at, now)
    return "available" if now >= pg.ready_at else "creating"


def postgres_json(emu: RenderEmulator, pg: Postgres, now: float) -> dict[str, Any]:
    """The database as ``GET /postgres/{id}`` answers it, keys in Render's order."""
    owner = emu.state.owners.get(pg.owner_id)
    data: dict[str, Any] = {
        "createdAt": iso(pg.created),
        "dashboardUrl": f"https://dashboard.render.com/d/{pg.id}",
        "databaseName": pg.database_name,
        "databaseUser": pg.database_user,
        "diskAutoscalingEnabled": pg.disk_autoscaling,
        "diskSizeGB": pg.disk_size_gb,
    }
    if pg.environment_id:
        data["environmentId"] = pg.environment_id
    if pg.expires_at is not None:
        data["expiresAt"] = iso(pg.expires_at)
    data.update(
        {
            "highAvailabilityEnabled": pg.high_availability,
            "id": pg.id,
            # Render answers null for an empty allow list (see the recordings).
            "ipAllowList": [dict(x) for x in pg.ip_allow_list] or None,
            "name": pg.name,
            "owner": owner.json() if owner else {"id": pg.owner_id},
            "plan": pg.plan,
            "readReplicas": [],
            "region": pg.region,
            "role": "primary",
            "status": status(emu, pg, now),
            "suspended": "suspended" if pg.suspended or pg.expired else "not_suspended",
            "suspenders": (["user"] if pg.suspended else []) + (["billing"] if pg.expired else []),
            "updatedAt": iso(pg.updated),
            "version": pg.version,
        }
    )
    return data


def connection_info_json(emu: RenderEmulator, pg: Postgres) -> dict[str, str]:
    """External URL over TLS on the cluster's TCP address; internal through its socket (or
    Render's unreachable ``dpg-...`` host with ``internal_reachable=False``)."""
    cred = f"{pg.database_user}:{pg.password}"
    cluster = emu.provisioner.cluster_of(pg)
    ext_host, port = cluster.host, cluster.port
    if emu.internal_reachable:
        internal = cluster.socket_url(pg.database_name, pg.database_user, pg.password)
    else:
        internal = f"postgresql://{cred}@{pg.id}/{pg.database_name}"
    return {
        "externalConnectionString": f"postgresql://{cred}@{ext_host}:{port}/{pg.database_name}",
        "internalConnectionString": internal,
        "password": pg.password,
        # Render's own response shape (see the recordings): data handed to the API
        # client, never run by this project; the client treats it as a secret.
        "psqlCommand": (
            f"PGPASSWORD={pg.password} psql -h {ext_host} -p {port} "
            f"-U {pg.database_user} {pg.database_name}"
        ),
    }


# -- creating ----------------------------------------------------------------------------------


def validate_allow_list(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("ipAllowList must be an array")
    entries = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("cidrBlock"), str):
            raise bad_request("ipAllowList entries need a cidrBlock")
        try:
            ipaddress.ip_network(entry["cidrBlock"], strict=False)
        except ValueError:
            raise bad_request(f"invalid cidrBlock {entry['cidrBlock']!r}") from None
        entries.append(
            {"cidrBlock": entry["cidrBlock"], "description": str(entry.get("description", ""))}
        )
    return entries


def validate_create(body: dict[str, Any]) -> None:
    missing = [k for k in ("name", "ownerId", "plan", "version") if body.get(k) in (None, "")]
    if missing:
        raise bad_request(f"missing required field(s): {', '.join(missing)}")
    for key in ("name", "ownerId", "plan", "version"):
        if not isinstance(body[key], str):
            raise bad_request(f"{key} must be a string")
    if body["plan"] not in POSTGRES_PLANS:
        raise bad_request(f"invalid plan {body['plan']!r}")
    if body["plan"] in LEGACY_POSTGRES_PLANS:
        raise bad_request(LEGACY_PLAN_MESSAGE.format(plan=body["plan"]))
    if body["version"] not in POSTGRES_VERSIONS:
        raise bad_request(
            f"invalid version {body['version']!r}: must be one of " + ", ".join(POSTGRES_VERSIONS)
        )
    region = body.get("region", "oregon")
    if region not in REGIONS:
        raise bad_request(f"invalid region {region!r}")
    for key in ("databaseName", "databaseUser"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not IDENT.match(value)):
            raise bad_request(f"invalid {key} {value!r}: use letters, digits and underscores")
    disk = body.get("diskSizeGB")
    if disk is not None and (not isinstance(disk, int) or isinstance(disk, bool) or disk < 1):
        raise bad_request("diskSizeGB must be a positive integer")
    for key in ("enableHighAvailability", "enableDiskAutoscaling"):
        if key in body and not isinstance(body[key], bool):
            raise bad_request(f"{key} must be a boolean")


def create_postgres(emu: RenderEmulator, body: dict[str, Any]) -> Postgres:
    """Validate, apply the one-free-database rule, provision for real; the record exists
    (``creating``) before the database does, so the rule holds under concurrency."""
    validate_create(body)
    emu.provisioner.cluster_for_version(body["version"])  # serve the major it reports, or refuse
    # omitted (or null): Render's default, open to everywhere; [] means no outside access
    given = body.get("ipAllowList")
    allow_list = [dict(EVERYWHERE)] if given is None else validate_allow_list(given)
    now = emu.clock.time()
    plan = body["plan"]
    state = emu.state
    with state.lock:
        owner_id = body["ownerId"]
        if owner_id not in state.owners:
            raise not_found(owner_id)
        if plan == FREE_PLAN and (
            any(p.plan == FREE_PLAN and p.owner_id == owner_id for p in state.postgres.values())
            or emu.faults.take_free_refusal(owner_id, now)
        ):
            raise bad_request(FREE_TIER_LIMIT_MESSAGE)
        taken = {p.database_user for p in state.postgres.values()}
        user_base = ident(body.get("databaseUser") or body["name"])
        db_base = ident(body.get("databaseName") or body["name"])
        user = f"{user_base}_{suffix()}"
        while user in taken:
            user = f"{user_base}_{suffix()}"
        pg = Postgres(
            id=new_id("dpg") + "-a",
            seq=state.next_seq(),
            name=body["name"],
            owner_id=owner_id,
            plan=plan,
            version=body["version"],
            region=body.get("region", "oregon"),
            database_name=f"{db_base}_{suffix()}",
            database_user=user,
            password=password(),
            created=now,
            updated=now,
            ready_at=now + emu.provision_delay,
            held=emu.faults.never_available_enabled,
            ip_allow_list=allow_list,
            disk_size_gb=body.get("diskSizeGB") or (1 if plan == FREE_PLAN else 15),
            high_availability=bool(body.get("enableHighAvailability", False)),
            disk_autoscaling=bool(body.get("enableDiskAutoscaling", False)),
            environment_id=body.get("environmentId"),
            expires_at=now + FREE_TIER_DAYS * 86400 if plan == FREE_PLAN else None,
        )
        state.postgres[pg.id] = pg
    try:
        emu.provisioner.create(pg)
        seed = emu.faults.take_seed()
        if seed is not None:
            emu.provisioner.run_as_owner(pg, seed)
        emu.provisioner.apply_allow_list(pg)
    except Exception as exc:
        with state.lock:
            state.postgres.pop(pg.id, None)
        with contextlib.suppress(Exception):
            emu.provisioner.drop(pg)
            emu.provisioner.apply_allow_list(pg, dropped=True)
        log.error("provisioning %s failed: %s", pg.id, type(exc).__name__)
        raise EmulatorAPIError(500, "failed to provision the database") from exc
    with state.lock:  # the delay counts from when the database really exists
        pg.provisioned = True
        pg.ready_at = emu.clock.time() + emu.provision_delay
    log.info("created %s (%s, plan %s)", pg.id, pg.name, pg.plan)
    return pg


def delete_postgres(emu: RenderEmulator, postgres_id: str) -> None:
    with emu.state.lock:
        pg = get_pg(emu, postgres_id)
        del emu.state.postgres[postgres_id]
    if pg.plan == FREE_PLAN:
        emu.faults.free_deleted(pg.owner_id, emu.clock.time())
    emu.provisioner.drop(pg)
    emu.provisioner.apply_allow_list(pg, dropped=True)
    log.info("deleted %s (%s)", pg.id, pg.name)


def expire(emu: RenderEmulator) -> None:
    """Apply what the clock says, as Render does: a free database past its expiry is
    suspended (its role may no longer log in); 14 days later it is deleted."""
    now = emu.clock.time()
    to_suspend, to_delete = [], []
    with emu.state.lock:
        for pg in list(emu.state.postgres.values()):
            expiry = pg.expiry()
            if expiry is None or now < expiry:
                continue
            if now >= expiry + DELETION_GRACE:
                del emu.state.postgres[pg.id]
                to_delete.append(pg)
            elif not pg.expired:
                pg.expired = True
                to_suspend.append(pg)
    for pg in to_suspend:
        emu.provisioner.set_login(pg, False)
        log.info("%s (%s) expired: suspended", pg.id, pg.name)
    for pg in to_delete:
        with contextlib.suppress(Exception):
            emu.provisioner.drop(pg)
            emu.provisioner.apply_allow_list(pg, dropped=True)
        log.info("%s (%s) deleted 14 days after it expired", pg.id, pg.name)


# -- handlers ----------------------------------------------------------------------------------


def list_postgres(emu: RenderEmulator, req: Request) -> Reply:
    names, owners = set(req.param("name")), set(req.param("ownerId"))
    regions, suspended = set(req.param("region")), set(req.param("suspended"))
    envs = set(req.param("environmentId"))
    created_before = time_param(req, "createdBefore")
    created_after = time_param(req, "createdAfter")
    now = emu.clock.time()
    with emu.state.lock:
        items = []
        for pg in sorted(emu.state.postgres.values(), key=lambda p: p.seq):
            state = "suspended" if pg.suspended or pg.expired else "not_suspended"
            if (
                (names and pg.name not in names)
                or (owners and pg.owner_id not in owners)
                or (regions and pg.region not in regions)
                or (suspended and state not in suspended)
                or (envs and pg.environment_id not in envs)
                or (created_before is not None and pg.created >= created_before)
                or (created_after is not None and pg.created <= created_after)
            ):
                continue
            items.append((pg.seq, postgres_json(emu, pg, now)))
    return Reply(200, page(req, "postgres", items, "postgres"))


def create(emu: RenderEmulator, req: Request) -> Reply:
    pg = create_postgres(emu, req.obj())
    with emu.state.lock:
        return Reply(201, postgres_json(emu, pg, emu.clock.time()))


def get(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    with emu.state.lock:
        return Reply(200, postgres_json(emu, get_pg(emu, postgres_id), emu.clock.time()))


def update(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    body = req.obj()
    with emu.state.lock:
        pg = get_pg(emu, postgres_id)
        if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
            raise bad_request("name must be a non-empty string")
        if "plan" in body:
            plan = body["plan"]
            if plan not in POSTGRES_PLANS:
                raise bad_request(f"invalid plan {plan!r}")
            if plan in LEGACY_POSTGRES_PLANS and plan != pg.plan:
                raise bad_request(LEGACY_PLAN_MESSAGE.format(plan=plan))
            if plan == FREE_PLAN and pg.plan != FREE_PLAN:
                raise bad_request("a paid database cannot be changed to the free plan")
        allow_list = validate_allow_list(body["ipAllowList"]) if "ipAllowList" in body else None
        disk = body.get("diskSizeGB")
        if disk is not None and (not isinstance(disk, int) or disk < (pg.disk_size_gb or 1)):
            raise bad_request("diskSizeGB must be an integer no smaller than the current size")
        if "name" in body:
            pg.name = body["name"]
        regained = False
        if "plan" in body and body["plan"] != pg.plan:
            pg.plan = body["plan"]
            pg.updating_until = emu.clock.time() + emu.provision_delay
            if pg.plan != FREE_PLAN:
                # a paid plan never expires; an expired database is reachable again
                pg.expires_at = None
                regained, pg.expired = pg.expired, False
        if allow_list is not None:
            pg.ip_allow_list = allow_list
        if disk is not None:
            pg.disk_size_gb = disk
        if isinstance(body.get("enableHighAvailability"), bool):
            pg.high_availability = body["enableHighAvailability"]
        if isinstance(body.get("enableDiskAutoscaling"), bool):
            pg.disk_autoscaling = body["enableDiskAutoscaling"]
        pg.updated = emu.clock.time()
        reply = Reply(200, postgres_json(emu, pg, pg.updated))
    if regained and not pg.suspended:
        emu.provisioner.set_login(pg, True)
    if allow_list is not None:
        emu.provisioner.apply_allow_list(pg)
    return reply


def delete(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    delete_postgres(emu, postgres_id)
    return Reply(204)


def connection_info(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    with emu.state.lock:
        return Reply(200, connection_info_json(emu, get_pg(emu, postgres_id)))


def suspend(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    with emu.state.lock:
        pg = get_pg(emu, postgres_id)
    emu.provisioner.set_login(pg, False)
    with emu.state.lock:
        pg.suspended = True
        pg.updated = emu.clock.time()
    return Reply(202, empty=True)


def resume(emu: RenderEmulator, req: Request, postgres_id: str) -> Reply:
    with emu.state.lock:
        pg = get_pg(emu, postgres_id)
    if not pg.expired:  # only an upgrade brings an expired database back
        emu.provisioner.set_login(pg, True)
    with emu.state.lock:
        pg.suspended = False
        pg.updated = emu.clock.time()
    return Reply(202, empty=True)


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", r"/postgres", partial(list_postgres, emu)),
        Route("POST", r"/postgres", partial(create, emu)),
        Route("GET", rf"/postgres/{SEG}", partial(get, emu)),
        Route("PATCH", rf"/postgres/{SEG}", partial(update, emu)),
        Route("DELETE", rf"/postgres/{SEG}", partial(delete, emu)),
        Route("GET", rf"/postgres/{SEG}/connection-info", partial(connection_info, emu)),
        Route("POST", rf"/postgres/{SEG}/suspend", partial(suspend, emu)),
        Route("POST", rf"/postgres/{SEG}/resume", partial(resume, emu)),
    ]
