"""The one gate every destructive action of a rotation goes through.

Deleting a database, emptying or reusing one, and overwriting a target's env var are decided
here, from facts read from Render and PostgreSQL at that moment (never from the journal's or
this process's memory of them):

- the lease: this run still holds it (renewed right now, see lease.py);
- who points where: every configured target's value, re-read, compared with the database's
  connection info, re-read. A database any target points at is never deleted (one exception,
  which is the delete-first strategy itself: the old database, after its backup is proven and
  the drift check passed, while the services are frozen);
- who made it: a database is emptied, reused or deleted as "ours" only if the marker on the
  database itself (postgres/stamp.py) says a rotation of this very old database created it, or
  this journal asked Render to create it and Render made it after that request (a crash
  between the create call and the marker);
- what exists: a rollback to the old database first re-reads that it still exists; the new
  database is never deleted while the old one is gone (it may hold the only copy);
- proof: the old database is deleted only when the copy was proven (recorded by the verify
  phase, ``state.facts.copy``; for delete-first, the backup archive, re-hashed now) and
  the drift check, run right now, passed (``state.facts.drift``).

The drift check is a hook: `Rotation.drift_check` (default `content_drift_check`: a fresh
content fingerprint of the old database against the one stored for the snapshot the copy was
taken from, rotation/drift.py) proves the old database still matches that snapshot. It runs
with the old database sealed (rotation/sealing.py), through the sessions that sealed it,
which stay open until Render has deleted it: nothing can write to it between the check and
the deletion.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from render_rotator import secrets
from render_rotator.errors import (
    DriftError,
    NotFoundError,
    RenderRotatorError,
    RotationError,
    UsageError,
)
from render_rotator.postgres.archive import sha256_path
from render_rotator.postgres.clean import clean_database
from render_rotator.postgres.seal import SealError
from render_rotator.postgres.stamp import read_stamp
from render_rotator.render import ConnectionInfo, Postgres
from render_rotator.rotation import lease as lease_mod
from render_rotator.rotation import naming, sealing
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.drift import old_database_changes
from render_rotator.rotation.state import CopyProof, DriftRecord, DriftSummary
from render_rotator.rotation.targets import (
    TargetValue,
    fingerprint,
    points_at,
    read_target,
)
from render_rotator.rotation.targets import write_target as _write_env

log = logging.getLogger("render_rotator.rotation")

#: Seconds of slack between our create request and Render's createdAt (clocks differ).
_CREATE_SLACK = 120.0


class GuardError(RotationError):
    """A destructive step was refused: a fact it needs does not hold right now."""


@dataclass(frozen=True)
class DriftFact:
    """The outcome of a drift check: does the old database still match the snapshot?"""

    passed: bool
    summary: str
    differences: list[str] = field(default_factory=list)
    method: str = "inventory"
    tables: list[str] = field(default_factory=list)  # tables whose rows changed


#: (rotation, the sealed old database's open sessions to read it through) -> fact
DriftCheck = Callable[[Rotation, Sequence[Any]], DriftFact]


def content_drift_check(ctx: Rotation, sessions: Sequence[Any] = ()) -> DriftFact:
    """The old database's content fingerprint now against the one stored for the copy's
    snapshot (rows by checksum, sequences, definitions, settings, large objects); a journal
    from before fingerprints falls back to the inventory. The summary names tables only
    (it goes to the journal: no values)."""
    diffs, tables = old_database_changes(ctx, sessions=sessions)
    method = "content" if ctx.state.fingerprint else "inventory"
    if not diffs:
        return DriftFact(True, "unchanged since the snapshot", [], method, [])
    where = f"tables changed: {', '.join(tables)}" if tables else "definitions or settings"
    return DriftFact(False, f"{len(diffs)} difference(s); {where}", diffs, method, tables)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- facts recorded by phases ------------------------------------------------------------


def record_copy_proof(ctx: Rotation, *, method: str) -> None:
    """The verify phase proved the new database equal to the snapshot (called by it)."""
    ctx.state.facts.copy = CopyProof(new_id=ctx.state.new_id, method=method, at=_now())
    ctx.save()


def record_drift(ctx: Rotation, fact: DriftFact) -> None:
    """A drift check's outcome for the old database (kept for the report and for resume)."""
    ctx.state.facts.drift = DriftRecord(
        old_id=ctx.state.old_id,
        unchanged=fact.passed,
        method=fact.method,
        summary=fact.summary,
        at=_now(),
    )
    ctx.save()


def copy_proven(ctx: Rotation) -> bool:
    proof = ctx.state.facts.copy
    return bool(ctx.state.new_id) and proof is not None and proof.new_id == ctx.state.new_id


# -- facts read now ----------------------------------------------------------------------


def info_now(ctx: Rotation, postgres_id: str) -> ConnectionInfo | None:
    """The database's connection info as Render has it now (None once it is gone)."""
    try:
        info = ctx.client.get_connection_info(postgres_id)
    except NotFoundError:
        return None
    for secret in (info.password, info.internal_connection_string, info.external_connection_string):
        secrets.register(secret)
    ctx._conn[postgres_id] = info
    return info


def exists_now(ctx: Rotation, postgres_id: str) -> Postgres | None:
    return ctx.postgres(postgres_id)


def old_now(ctx: Rotation) -> Postgres | None:
    """Re-read whether the old database exists; remember it if it is gone."""
    old_id = ctx.state.old_id
    if not old_id or ctx.state.old_deleted:
        return None
    old = exists_now(ctx, old_id)
    ctx.set_old(old)
    if old is None:
        ctx.state.old_deleted = True
        ctx.state.old_deleted_elsewhere = True
        note = f"the old database {old_id} was deleted outside this rotation"
        if note not in ctx.report.notes:
            ctx.report.notes.append(note)
        log.warning("%s", note)
        ctx.save()
    return old


def _all_targets(ctx: Rotation) -> list[Any]:
    """Every target of every database in the config, once each."""
    seen: dict[str, Any] = {}
    for db in ctx.config.databases:
        for target in db.targets:
            seen.setdefault(target.label, target)
    for target in ctx.db.targets:
        seen.setdefault(target.label, target)
    return list(seen.values())


def pointing_at(ctx: Rotation, postgres_id: str) -> list[str]:
    """Labels of the configured targets whose value, read now, connects to `postgres_id`."""
    info = info_now(ctx, postgres_id)
    if info is None:
        return []
    return [t.label for t in _all_targets(ctx) if points_at(read_target(ctx.client, t).value, info)]


def _confirm_lease(ctx: Rotation) -> None:
    if ctx.lease is not None:
        ctx.lease.confirm()


def made_by_us(ctx: Rotation, pg: Postgres) -> str | None:
    """How we know a rotation of this old database made `pg` ("marker" / "journal"), or None.

    The marker on the database is read now; without one (the database is still being
    provisioned, or the marker was never written because a run died right after creating
    it), this journal's create request counts if Render created `pg` after it, by that name.
    """
    creating = ctx.state.creating
    created = pg.created_at.timestamp() if pg.created_at else None
    if (
        creating is not None
        and creating.name == pg.name
        and created is not None
        and created >= creating.requested_at - _CREATE_SLACK
    ):
        return "journal"
    if pg.id in (ctx.state.created_ids or []):
        return "journal"
    if marked_for(ctx, pg) == ctx.state.old_id:
        return "marker"
    return None


def marked_for(ctx: Rotation, pg: Postgres) -> str | None:
    """The old database whose rotation created `pg`, by the marker on it read now."""
    try:
        info = info_now(ctx, pg.id)
        if info is None:
            return None
        marker = read_stamp(
            info.external_connection_string, connect_timeout=ctx.settings.connect_timeout
        ).get("marker")
    except RenderRotatorError as exc:
        log.info("could not read the marker on %s: %s", pg.id, exc)
        return None
    return str(marker.get("old_id")) if isinstance(marker, dict) else None


# -- reusing -----------------------------------------------------------------------------


def check_reuse(ctx: Rotation, pg: Postgres) -> None:
    """Refuse to take over a database no rotation of this old database created (exit 2)."""
    if made_by_us(ctx, pg) is not None:
        return
    old = f"{ctx.state.old_name} ({ctx.state.old_id})"
    rendered = naming.new_name(
        ctx.db.new_name, ctx.state.known_spec.name, ctx.today or date.today()
    )
    what = (
        f"the new database's name {pg.name!r} is already used by {pg.id}, a database"
        if pg.name == rendered
        else f"{pg.id} ({pg.name}) looks like a half-done rotation, but it is a database"
    )
    raise UsageError(
        f"{what} no rotation of {old} created (it carries no render-rotator marker); "
        "nothing was changed",
        hint="set new_name in the config to a name no database uses (it may contain {name} "
        "and {date}), or delete or rename that database yourself",
    )


def check_new_name(ctx: Rotation, today: Any) -> None:
    """Before anything changes: the new database's name must be free, or belong to a
    half-done rotation of this very database."""
    state = ctx.state
    if ctx.new is not None:
        check_reuse(ctx, ctx.new)
    if state.new_id:
        return
    name = naming.new_name(ctx.db.new_name, state.known_spec.name, today)
    for pg in ctx.client.list_postgres(name=name, owner_id=state.owner_id):
        if pg.name == name and pg.id != state.old_id:
            check_reuse(ctx, pg)


def mark_new(ctx: Rotation, pg: Postgres) -> None:
    """Write the creation marker on the new database (and put the lease there too, in the
    same transaction), the moment it is available."""
    url = ctx.connection_info(pg.id).external_connection_string
    marker = {
        "rotation": ctx.journal.rotation_id,
        "old_id": ctx.state.old_id,
        "database": ctx.db.label,
        "created_at": pg.created_at.isoformat() if pg.created_at else None,
    }
    if ctx.lease is not None:
        ctx.lease.acquire(pg.id, url, extra={"marker": marker})
        ctx.lease.drop_files()  # the new database carries it now (rotation/lease.py)
    else:
        from render_rotator.postgres.stamp import update_stamp

        update_stamp(
            url,
            lambda stamp, _now: {**stamp, "marker": marker},
            connect_timeout=ctx.settings.connect_timeout,
        )
    ids = ctx.state.created_ids
    if pg.id not in ids:
        ids.append(pg.id)
    ctx.save()


# -- emptying ----------------------------------------------------------------------------


def empty_new(ctx: Rotation) -> int:
    """Drop everything in the new database before copying into it again: only one a
    rotation of this old database created, only while the data also exists elsewhere (the
    old database, or the verified backup), and never once a deploy using it went live."""
    new_id = ctx.state.known_new_id
    _confirm_lease(ctx)
    pg = exists_now(ctx, new_id)
    if pg is None:
        raise GuardError(f"refusing to empty {new_id}: it no longer exists on Render")
    if made_by_us(ctx, pg) is None:
        raise GuardError(
            f"refusing to empty {new_id} ({pg.name}): nothing proves a rotation of "
            f"{ctx.state.old_id} created it (no marker on it)",
            hint="delete it yourself if it is unused, then run `render-rotator resume`",
        )
    if old_now(ctx) is None:
        require_backup(ctx, f"empty {new_id} (the old database is gone)")
    users = pointing_at(ctx, new_id)
    live = [service for service, record in ctx.state.deploys.items() if record.status == "live"]
    if users and live:
        raise GuardError(
            f"refusing to empty {new_id}: {', '.join(users)} point(s) at it and the deploy "
            f"of {', '.join(live)} went live on it, so it may hold new writes",
        )
    return clean_database(
        ctx.new_url(),
        connect_timeout=ctx.settings.connect_timeout,
        command_timeout=ctx.settings.command_timeout,
    )


# -- deleting ----------------------------------------------------------------------------


def drop_new(ctx: Rotation, why: str) -> None:
    """Delete the unused new database when landing back on the old one."""
    state = ctx.state
    new_id = state.new_id
    if not new_id:
        return
    _confirm_lease(ctx)
    pg = exists_now(ctx, new_id)
    if pg is not None:
        if old_now(ctx) is None:
            raise GuardError(
                f"refusing to delete the new database {new_id}: the old database "
                f"{state.old_id} is gone, so the new one may hold the only copy"
            )
        users = pointing_at(ctx, new_id)
        if users:
            raise GuardError(
                f"refusing to delete the new database {new_id}: {', '.join(users)} "
                "point(s) at it right now"
            )
        if made_by_us(ctx, pg) is None:
            raise GuardError(
                f"refusing to delete {new_id} ({pg.name}): nothing proves this rotation created it",
                hint="check it and delete it yourself if it is unused",
            )
        if ctx.lease is not None:
            ctx.lease.forget(new_id)
        with contextlib.suppress(NotFoundError):
            ctx.client.delete_postgres(new_id)
        log.info("deleted the new database %s: %s", new_id, why)
    state.new_id = None
    state.new_deleted = new_id
    ctx.set_new(None)
    ctx.save()


def require_backup(ctx: Rotation, what: str = "delete the old database") -> None:
    """The archive is on disk and hashes as it did when it was verified."""
    entry = ctx.state.backup
    if not entry or not Path(entry.path).exists():
        raise GuardError(f"refusing to {what}: no backup on disk")
    if sha256_path(Path(entry.path)) != entry.sha256:
        raise GuardError(f"refusing to {what}: backup {entry.path} changed since it was verified")


def _check_drift(ctx: Rotation, sessions: Sequence[Any]) -> None:
    check: DriftCheck = ctx.drift_check or content_drift_check
    fact = check(ctx, sessions)
    record_drift(ctx, fact)
    if not fact.passed:
        ctx.state.drift = DriftSummary(tables=list(fact.tables), differences=len(fact.differences))
        ctx.save()
        old_id, new_id = ctx.state.old_id, ctx.state.new_id
        if ctx.state.strategy == "delete-first":
            step = (
                "Nothing was deleted and the services keep using it. Stop whatever writes to it "
                "directly (a cron job, a worker, a client with its own connection) or use "
                'freeze = "readonly", then run `render-rotator rotate` again'
            )
        else:
            step = (
                f"Every target already uses {new_id}. Move the rows written to {old_id} after "
                f"the copy into {new_id} by hand, then delete {old_id} from the Render dashboard "
                "(it stays read-only until then; `render-rotator resume` will not delete it "
                "while it differs)"
            )
        action = "delete" if ctx.state.strategy == "delete-first" else "retire"
        raise DriftError(
            f"refusing to {action} the old database {old_id}: it changed after the snapshot the "
            f"copy was taken from, so it was kept ({fact.summary}): it holds writes the copy "
            f"does not have. {step}",
            differences=[f"old database since the snapshot: {d}" for d in fact.differences],
            tables=list(fact.tables),
        )


def _drift_passed(ctx: Rotation) -> bool:
    drift = ctx.state.facts.drift
    return drift is not None and drift.unchanged and drift.old_id == ctx.state.old_id


def delete_old(ctx: Rotation) -> bool:
    """Delete the old database if, right now, every fact allows it; False when it was
    already gone."""
    state = ctx.state
    old_id = state.known_old_id
    _confirm_lease(ctx)
    if old_now(ctx) is None:
        return False
    delete_first = state.strategy == "delete-first"
    require_backup(ctx)
    if not delete_first:
        if not copy_proven(ctx):
            raise GuardError("refusing to delete the old database: the copy was not proven")
        new_id = state.new_id
        if not new_id or exists_now(ctx, new_id) is None:
            raise GuardError(
                f"refusing to delete the old database {old_id}: the new database {new_id} "
                "does not exist"
            )
        users = pointing_at(ctx, old_id)
        if users:
            raise GuardError(
                f"refusing to delete the old database {old_id}: {', '.join(users)} point(s) "
                "at it right now",
                hint="point them at the new database (or remove them from the config), then "
                "run `render-rotator resume`",
            )
    if ctx.lease is not None:
        if delete_first:
            # from the deletion until the new database carries the marker, the backup is the
            # only thing another run could act from: the lease goes beside it first
            ctx.lease.acquire_file(lease_mod.file_for(Path(state.known_backup.path)))
        # no more renewals there: the seal leaves no room for the heartbeat's session (a
        # landing back on it takes the lease there again, rotation/sealing.py); the last
        # record there names the seal and the limit to put back, for a run without the journal
        ctx.lease.note_sealed(old_id, sealing.limit_to_put_back(ctx))
        ctx.lease.forget(old_id)
    with sealing.sealed_old(ctx) as sealed:
        _check_drift(ctx, sealed.sessions)
        if not _drift_passed(ctx):  # the fact the deletion stands on, as recorded
            raise GuardError("refusing to delete the old database: no passed drift check")
        try:
            sealed.confirm_alone()  # what the check saw is still all there is
        except SealError as exc:
            raise GuardError(
                f"refusing to delete the old database {old_id}: {exc.message}; it was kept",
                hint="run `render-rotator resume` to check it again",
            ) from None
        with contextlib.suppress(NotFoundError):
            ctx.client.delete_postgres(old_id)
        state.old_deleted = True
        ctx.set_old(None)
        ctx.save()
        deadline = time.monotonic() + 120
        with ctx.ui.waiting(f"Render to delete {old_id}"):
            delay = 0.25
            while ctx.postgres(old_id) is not None and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    return True


# -- env vars ----------------------------------------------------------------------------


def write_target(ctx: Rotation, current: TargetValue, value: str, *, to: str) -> None:
    """Overwrite one target with `value`, which must connect to the `to` ("new" / "old")
    database, and only while the target still names this rotation's old or new database."""
    state = ctx.state
    _confirm_lease(ctx)
    dest_id = state.new_id if to == "new" else state.old_id
    dest = info_now(ctx, dest_id) if dest_id else None
    if dest is None:
        raise GuardError(
            f"refusing to set {current.label}: the {to} database {dest_id} does not exist"
        )
    if not points_at(value, dest):
        raise GuardError(f"refusing to set {current.label}: the value is not the {to} database")
    if to == "new" and not copy_proven(ctx):
        raise GuardError(f"refusing to point {current.label} at {dest_id}: copy not proven")
    live = read_target(ctx.client, current.target).value
    entry = state.targets.get(current.label)
    ours = [state.old_id, state.new_id]
    known = any(
        points_at(live, info) for info in (info_now(ctx, i) for i in ours if i) if info is not None
    ) or (live is not None and entry is not None and fingerprint(live) == entry.old_sha256)
    if not known:
        raise GuardError(
            f"refusing to overwrite {current.label}: it was changed by someone else during "
            "the rotation (it no longer points at the old or the new database)",
            hint="check the value on Render, then run `render-rotator resume`",
        )
    _write_env(ctx.client, current.target, value)
