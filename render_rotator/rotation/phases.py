"""The rotation's phases, in order; each is idempotent so a crashed run can re-run it.

inspect -> freeze -> backup -> delete-old -> provision -> copy -> verify -> repoint -> deploy
-> retire -> report. `delete-old` runs only for the delete-first strategy (after a verified
backup exists); `retire` only for create-first without keep_old.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from render_rotator.config import base_name
from render_rotator.errors import (
    APITimeoutError,
    ConflictError,
    NotFoundError,
    RotationError,
    UsageError,
    VerificationError,
)
from render_rotator.postgres.archive import sha256_path
from render_rotator.postgres.binaries import check_client_for_server, server_major_from_num
from render_rotator.postgres.clean import clean_database
from render_rotator.postgres.connect import connection
from render_rotator.postgres.inventory import Inventory, compare_inventories, take_inventory
from render_rotator.render import DEPLOY_SUCCESSFUL, Postgres, is_free_tier_refusal
from render_rotator.rotation import freeze as freezing
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.targets import (
    fingerprint,
    new_value,
    points_at,
    read_target,
    write_target,
)

log = logging.getLogger("render_rotator.rotation")

Phase = Callable[[Rotation], bool | None]  # returns False when the phase was skipped


# -- inspect ----------------------------------------------------------------------------


def _candidates(ctx: Rotation) -> list[Postgres]:
    """Databases that are this config entry's database or a rotation of it."""
    owner = ctx.config.render.owner_id
    if ctx.db.id:
        pg = ctx.postgres(ctx.db.id)
        if pg is None:
            raise UsageError(
                f"database {ctx.db.id} was not found on Render",
                hint="after a rotation the id changes: put the new id (see the last report) "
                "in the config, or use name = instead of id =",
            )
        siblings = [
            p
            for p in ctx.client.list_postgres(owner_id=owner or pg.owner_id)
            if base_name(p.name) == base_name(pg.name) and p.id != pg.id
        ]
        return [pg, *siblings]
    assert ctx.db.name is not None
    wanted = base_name(ctx.db.name)
    found = [
        p
        for p in ctx.client.list_postgres(owner_id=owner)
        if p.name == ctx.db.name or base_name(p.name) == wanted
    ]
    if not found:
        raise UsageError(
            f"no Render database named {ctx.db.name!r} (or a rotation of it) was found",
            hint="check the name in the config and that RENDER_API_KEY belongs to its workspace",
        )
    return found


def _created(pg: Postgres) -> datetime:
    return pg.created_at or datetime.min.replace(tzinfo=UTC)


def inspect(ctx: Rotation) -> bool:
    """Find the old database, its targets and (if any) a half-done rotation's new database."""
    state = ctx.state
    if state.get("old_id"):
        old = ctx.old  # resuming: the journal knows which is which
        new = ctx.new
    else:
        candidates = sorted(_candidates(ctx), key=_created)
        infos = {p.id: ctx.connection_info(p.id) for p in candidates}
        values = [read_target(ctx.client, t) for t in ctx.db.targets]
        pointed = {p.id for p in candidates for v in values if points_at(v.value, infos[p.id])}
        if len(pointed) > 1:
            raise UsageError(
                f"the targets of {ctx.db.label} point at different databases "
                f"({', '.join(sorted(pointed))})",
                hint="make every target use the same database before rotating",
            )
        if pointed:
            old = next(p for p in candidates if p.id in pointed)
        elif ctx.db.id:
            old = candidates[0]
        else:
            exact = [p for p in candidates if p.name == ctx.db.name]
            old = (exact or candidates)[0]
        newer = [p for p in candidates if _created(p) > _created(old)]
        new = newer[-1] if newer else None
        if new is not None:
            log.warning(
                "found %s (%s), created after %s: finishing that half-done rotation instead of "
                "creating another database",
                new.id,
                new.name,
                old.id,
            )
            ctx.report.notes.append(f"resumed a half-done rotation found on Render ({new.id})")
        state.update(
            {
                "old_id": old.id,
                "old_name": old.name,
                "owner_id": ctx.config.render.owner_id or old.owner_id,
                "requested_strategy": ctx.settings.strategy,
                "strategy": "delete-first"
                if ctx.settings.strategy == "delete-first"
                else "create-first",
            }
        )
        if new is not None:
            state["new_id"], state["new_name"] = new.id, new.name
            ctx.set_new(new)
        ctx.set_old(old)
    if old is None and not state.get("old_deleted"):
        raise RotationError(
            f"the old database {state.get('old_id')} no longer exists on Render",
            hint="if a backup was taken, restore it: see the journal in the state directory",
        )
    if old is not None:
        state["old_spec"] = {
            "name": old.name,
            "plan": old.plan,
            "version": old.version,
            "region": old.region,
            "database_name": old.database_name,
            "database_user": old.database_user,
            "ip_allow_list": [e.to_api() for e in old.ip_allow_list],
            "environment_id": old.environment_id,
            "expires_at": old.expires_at.isoformat() if old.expires_at else None,
        }
        ctx.report.old = {
            "id": old.id,
            "name": old.name,
            "expires_at": state["old_spec"]["expires_at"],
            "version": old.version,
            "plan": old.plan,
        }
    _inspect_targets(ctx, new)
    if old is not None and not ctx.journal.is_done("backup"):
        _check_client(ctx)
    ctx.save()
    return True


def _inspect_targets(ctx: Rotation, new: Postgres | None) -> None:
    state = ctx.state
    old_info = ctx.connection_info(state["old_id"]) if ctx.old is not None else None
    new_info = ctx.connection_info(new.id) if new is not None else None
    recorded = state.setdefault("targets", {})
    ctx.target_values = []
    for target in ctx.db.targets:
        current = read_target(ctx.client, target)
        ctx.target_values.append(current)
        entry = recorded.setdefault(target.label, {"repointed": False})
        on_old = points_at(current.value, old_info) if old_info else None
        on_new = points_at(current.value, new_info) if new_info else None
        if current.value is None:
            raise UsageError(
                f"target {target.label} is not set on Render",
                hint="set it to the database's connection string, or remove the target",
            )
        if on_old:
            entry.update({"old_kind": on_old, "old_sha256": fingerprint(current.value)})
            ctx.old_values[target.label] = current.value
        elif on_new:
            entry["repointed"] = True
        elif old_info is None and entry.get("old_sha256") == fingerprint(current.value):
            pass  # the old database is gone (delete-first); the target still names it
        else:
            raise UsageError(
                f"target {target.label} does not point at {state.get('old_name')} "
                f"({state['old_id']})",
                hint="check the target's service/env_group and key in the config",
            )


def _check_client(ctx: Rotation) -> None:
    """The version rule, checked against the real server before anything changes."""
    manager = ctx.manager()
    with connection(ctx.old_url(), connect_timeout=ctx.settings.connect_timeout) as conn:
        major = server_major_from_num(int(conn.server_version))
    check_client_for_server(manager.client, major)


# -- freeze -----------------------------------------------------------------------------


def freeze(ctx: Rotation) -> bool:
    """Stop writes to the old database so the copy misses nothing."""
    mode = ctx.settings.freeze
    if ctx.old is None:
        return False  # nothing left to write to
    frozen = ctx.state.setdefault("frozen", {"mode": mode, "suspended": [], "maintenance": []})
    if "started_at" not in frozen:
        frozen["started_at"] = time.time()
    freezing.freeze(ctx, mode, frozen)
    ctx.save()
    return mode != "none"


# -- backup -----------------------------------------------------------------------------


def backup(ctx: Rotation) -> bool:
    """A verified archive on disk (readable, hashed, with the source inventory) before any
    deletion can happen."""
    state = ctx.state
    existing: dict[str, Any] = state.get("backup") or {}
    path_done = Path(existing["path"]) if existing else None
    if path_done and path_done.exists() and sha256_path(path_done) == existing["sha256"]:
        return True
    if ctx.old is None:
        raise RotationError(
            "the old database is gone and no intact backup exists",
            hint=f"look for archives in {ctx.settings.backup_dir}",
        )
    backup_dir = ctx.settings.backup_dir
    try:
        backup_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create backup_dir {backup_dir}: {exc.strerror}",
            hint="set backup_dir in the config to a writable directory",
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = backup_dir / f"{state['old_name']}-{state['old_id']}-{stamp}.dump"
    info = ctx.manager().backup_database(ctx.old_url(), path)
    assert info.inventory is not None
    manifest = {
        "database": state["old_name"],
        "postgres_id": state["old_id"],
        "created_at": stamp,
        "archive": info.to_dict(),
    }
    manifest_path = path.with_name(path.name + ".json")
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str))
    state["backup"] = {
        "path": str(path),
        "manifest": str(manifest_path),
        "sha256": info.sha256,
        "size_bytes": info.archive.size_bytes,
        "format": info.archive.format,
    }
    state["inventory"] = info.inventory.to_dict()
    ctx.save()
    log.info("verified backup of %s: %s", state["old_name"], path)
    return True


def _require_backup(ctx: Rotation) -> None:
    """Refuse to delete anything unless the archive is on disk and unchanged."""
    entry = ctx.state.get("backup")
    if not entry or not Path(entry["path"]).exists():
        raise RotationError("refusing to delete the old database: no backup on disk")
    if sha256_path(Path(entry["path"])) != entry["sha256"]:
        raise RotationError(
            f"refusing to delete the old database: backup {entry['path']} changed since it "
            "was verified"
        )


# -- delete-old (delete-first) ----------------------------------------------------------


def delete_old(ctx: Rotation) -> bool:
    """Free the one free-database slot, only after the backup is proven."""
    if ctx.state.get("strategy") != "delete-first":
        return False
    if ctx.state.get("old_deleted"):
        return True
    _require_backup(ctx)
    old_id = ctx.state["old_id"]
    with contextlib.suppress(NotFoundError):
        ctx.client.delete_postgres(old_id)
    ctx.state["old_deleted"] = True
    ctx.set_old(None)
    ctx.save()
    deadline = time.monotonic() + 120
    with ctx.ui.waiting(f"Render to delete {old_id}"):
        while ctx.postgres(old_id) is not None and time.monotonic() < deadline:
            time.sleep(1)
    log.info("deleted the old database %s (backup %s)", old_id, ctx.state["backup"]["path"])
    return True


# -- provision --------------------------------------------------------------------------


def _new_fields(ctx: Rotation, name: str) -> dict[str, object]:
    spec = ctx.state["old_spec"]
    fields: dict[str, object] = {
        "name": name,
        "ownerId": ctx.state["owner_id"],
        "plan": spec["plan"],
        "version": ctx.db.version or spec["version"],
        "region": spec["region"],
        "databaseName": spec["database_name"],
        "databaseUser": spec["database_user"],
    }
    if spec.get("ip_allow_list"):
        fields["ipAllowList"] = spec["ip_allow_list"]
    if spec.get("environment_id"):
        fields["environmentId"] = spec["environment_id"]
    return fields


def provision(ctx: Rotation) -> bool:
    """Create the replacement (same plan, version, region, names, allow list) and wait for it."""
    state = ctx.state
    new = ctx.new if state.get("new_id") else None
    if new is None:
        name = state.get("new_name") or ctx.db.render_new_name(
            state["old_spec"]["name"], ctx.today or date.today()
        )
        state["new_name"] = name
        same_name = [
            p
            for p in ctx.client.list_postgres(name=name, owner_id=state["owner_id"])
            if p.name == name and p.id != state["old_id"]
        ]
        if same_name:
            new = same_name[0]
            log.info("reusing %s (%s) created by an earlier attempt", new.id, name)
        else:
            new = _create(ctx, name)
        state["new_id"] = new.id
        ctx.save()
    timeout = ctx.settings.provision_timeout
    try:
        with ctx.ui.waiting(f"{new.id} to become available"):
            new = ctx.client.wait_for_postgres(new.id, status="available", timeout=timeout)
    except APITimeoutError:
        if ctx.old is not None:
            ctx.client.delete_postgres(new.id)  # empty: nothing of the user's is lost
            state.pop("new_id", None)
            ctx.set_new(None)
            ctx.save()
            raise RotationError(
                f"the new database {new.id} did not become available within {timeout:g}s; "
                "it was deleted and the old database stays in use",
                hint="try again later, or raise provision_timeout",
            ) from None
        raise RotationError(
            f"the new database {new.id} did not become available within {timeout:g}s",
            hint="run `render-rotator resume` once Render shows it available; the backup "
            f"{state['backup']['path']} holds the data",
        ) from None
    ctx.set_new(new)
    ctx.report.new = {
        "id": new.id,
        "name": new.name,
        "expires_at": new.expires_at.isoformat() if new.expires_at else None,
        "version": new.version,
        "plan": new.plan,
    }
    ctx.save()
    return True


def _create(ctx: Rotation, name: str) -> Postgres:
    try:
        return ctx.client.create_postgres(**_new_fields(ctx, name))
    except ConflictError as exc:
        refused_free = is_free_tier_refusal(exc)
        if not refused_free or ctx.state["requested_strategy"] != "auto":
            if refused_free:
                raise RotationError(
                    f"Render refused a second free database: {exc.message}",
                    hint='set strategy = "auto" or "delete-first" for free databases',
                ) from None
            raise
    log.warning("Render allows one free database per workspace: switching to delete-first")
    ctx.state["strategy"] = "delete-first"
    ctx.report.notes.append("Render refused a second free database: used delete-first")
    ctx.save()
    ctx.journal.begin("delete-old")
    started = time.monotonic()
    delete_old(ctx)
    seconds = time.monotonic() - started
    ctx.journal.finish("delete-old", seconds)
    for record in ctx.report.phases:
        if record.name == "delete-old":
            record.status, record.seconds = "done", seconds
    return ctx.client.create_postgres(**_new_fields(ctx, name))


# -- copy / restore ----------------------------------------------------------------------


def copy(ctx: Rotation) -> bool:
    """Fill the new database: from the verified backup (consistent with the freeze)."""
    new_url = ctx.new_url()
    manager = ctx.manager()
    if ctx.journal.phases.get("copy", {}).get("attempts", 1) > 1 or ctx.state.get("copy_started"):
        clean_database(new_url, connect_timeout=ctx.settings.connect_timeout)
    ctx.state["copy_started"] = True
    ctx.save()
    path = Path(ctx.state["backup"]["path"])
    result = manager.restore_database(new_url, path)
    for skipped in result.skipped:
        ctx.report.notes.append(f"skipped during restore (needs a superuser): {skipped}")
    ctx.state["copy"] = {"method": "pg_restore", "seconds": round(result.seconds, 3)}
    ctx.save()
    return True


# -- verify -----------------------------------------------------------------------------


def verify(ctx: Rotation) -> bool:
    """The new database must hold exactly what the backup's snapshot held."""
    source = Inventory.from_dict(ctx.state["inventory"])
    target = take_inventory(
        ctx.new_url(),
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    )
    report = compare_inventories(source, target)
    ctx.report.rows_copied = source.total_rows
    if not report.equal:
        ctx.state["verified"] = False
        ctx.save()
        raise VerificationError(
            f"the new database does not match the old one: {report.summary()}",
            differences=report.differences,
        )
    ctx.state["verified"] = True
    ctx.state["rows_copied"] = source.total_rows
    ctx.save()
    log.info("%s", report.summary())
    return True


# -- repoint ----------------------------------------------------------------------------


def repoint(ctx: Rotation) -> bool:
    """Point every target at the new database, one key at a time."""
    if not ctx.state.get("verified"):
        raise RotationError("refusing to repoint: the copy was not verified")
    info = ctx.connection_info(ctx.state["new_id"])
    for current in ctx.target_values:
        entry = ctx.state["targets"][current.label]
        if entry.get("repointed"):
            continue
        value = new_value(current.value, info, current.target.connection)
        write_target(ctx.client, current.target, value)
        entry["repointed"] = True
        ctx.save()
        log.info("repointed %s to %s", current.label, ctx.state["new_id"])
    return True


def restore_old_values(ctx: Rotation) -> list[str]:
    """Put targets back on the old database (it must still exist); returns labels restored."""
    restored = []
    old_info = ctx.connection_info(ctx.state["old_id"])
    for current in ctx.target_values:
        entry = ctx.state["targets"].get(current.label, {})
        if not entry.get("repointed"):
            continue
        value = ctx.old_values.get(current.label)
        if value is None:
            kind = entry.get("old_kind", current.target.connection)
            value = (
                old_info.internal_connection_string
                if kind == "internal"
                else old_info.external_connection_string
            )
        write_target(ctx.client, current.target, value)
        entry["repointed"] = False
        restored.append(current.label)
        ctx.save()
    return restored


# -- deploy -----------------------------------------------------------------------------


def deploy(ctx: Rotation) -> bool:
    """Thaw the services and redeploy each once so it reads the new URL; wait until live."""
    freezing.thaw(ctx)
    failed = run_deploys(ctx, "deploys")
    if not failed:
        return True
    what = ", ".join(f"{svc} ({status})" for svc, status in failed)
    if ctx.old is None:
        raise RotationError(
            f"deploy failed for {what}; the new database holds the data and the old one is "
            "gone, so nothing was rolled back",
            hint="fix the service and redeploy it from the Render dashboard",
        )
    restored = restore_old_values(ctx)
    ctx.state["rolled_back"] = True
    ctx.save()
    run_deploys(ctx, "rollback_deploys")
    raise RotationError(
        f"deploy failed for {what}; {len(restored)} target(s) were put back on the old "
        f"database {ctx.state['old_id']} and redeployed",
        hint="fix the service, then run rotate again",
    )


def run_deploys(ctx: Rotation, key: str) -> list[tuple[str, str]]:
    """Trigger (once) and await a deploy per service; returns the ones that failed."""
    records = ctx.state.setdefault(key, {})
    for service_id in ctx.affected_services():
        if service_id not in records:
            deploy_obj = ctx.client.trigger_deploy(service_id)
            records[service_id] = {"deploy_id": deploy_obj.id if deploy_obj else None}
            ctx.save()
    failed = []
    for service_id, record in records.items():
        if record.get("deploy_id") is None:
            record["status"] = "unknown"
            ctx.report.notes.append(f"could not identify the deploy of {service_id}")
            continue
        with ctx.ui.waiting(f"deploy {record['deploy_id']} of {service_id} to go live"):
            final = ctx.client.wait_for_deploy(
                service_id, record["deploy_id"], timeout=ctx.settings.deploy_timeout
            )
        record["status"] = final.status_raw
        ctx.save()
        if final.status not in DEPLOY_SUCCESSFUL:
            failed.append((service_id, final.status_raw))
    ctx.report.deploys = [
        {"service_id": s, "deploy_id": r.get("deploy_id"), "status": r.get("status")}
        for s, r in records.items()
    ]
    return failed


# -- retire -----------------------------------------------------------------------------


def retire(ctx: Rotation) -> bool:
    """Delete the old database (create-first), only now that the new one is live."""
    if ctx.state.get("strategy") == "delete-first" or ctx.state.get("old_deleted"):
        return False
    if ctx.settings.keep_old:
        ctx.report.notes.append(f"kept the old database {ctx.state['old_id']} (keep_old)")
        return False
    if not ctx.state.get("verified"):
        raise RotationError("refusing to delete the old database: the copy was not verified")
    _require_backup(ctx)
    with contextlib.suppress(NotFoundError):
        ctx.client.delete_postgres(ctx.state["old_id"])
    ctx.state["old_deleted"] = True
    ctx.save()
    return True


def report(ctx: Rotation) -> bool:
    """Fill in the final report from the journal."""
    return True


PHASES: tuple[tuple[str, Phase], ...] = (
    ("inspect", inspect),
    ("freeze", freeze),
    ("backup", backup),
    ("delete-old", delete_old),
    ("provision", provision),
    ("copy", copy),
    ("verify", verify),
    ("repoint", repoint),
    ("deploy", deploy),
    ("retire", retire),
    ("report", report),
)
PHASE_NAMES = tuple(name for name, _ in PHASES)
