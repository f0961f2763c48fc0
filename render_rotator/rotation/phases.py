"""The rotation's phases, in order; each is idempotent so a crashed run can re-run it.

inspect -> upgrade -> freeze -> backup -> delete-old -> provision -> copy -> verify -> repoint
-> deploy -> retire -> report. `upgrade` runs only for `rotate --rescue` of an expired free
database; `delete-old` only for the delete-first strategy (after a verified backup exists);
`retire` only for create-first without keep_old.

A phase returns True (done), False (skipped) or a decision for the runner (decisions.py):
only the runner (workflow.py) moves between phases, switches strategy and records phases.

create-first (and auto, which starts as create-first) provisions before the freeze instead:
inspect -> upgrade -> provision -> freeze -> backup -> copy -> ... (`phase_order`), so the
minutes Render takes to make a database are not part of the app's downtime; and its copy runs
beside its backup (`beside`), both in one exported snapshot of the old database, so the
freeze lasts the longer of the two rather than their sum. A backup that fails stops the copy
and the rotation before any cutover: nothing is repointed or deleted without it. When Render
refuses that early second free database, auto falls back to delete-first without deleting
anything (provision returns FallBackToDeleteFirst): freeze, backup and delete-old come
first, then provision runs again.

Each phase may be cut off at any point (a crash, a kill, Ctrl-C) and run again from the start
by `resume`: progress inside a phase is written to the journal before each step that changes
something on Render, and every step first looks at what already exists (a database created
under the new name, a deploy triggered after the repoint, a target already repointed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from render_rotator.errors import (
    APITimeoutError,
    ConflictError,
    ConnectError,
    DriftError,
    RenderAPIError,
    RenderRotatorError,
    RotationError,
    ServerError,
    UsageError,
    VerificationError,
)
from render_rotator.postgres.archive import (
    best_compression,
    remove_stale_partials,
    sha256_path,
    write_private,
)
from render_rotator.postgres.binaries import server_major_from_num
from render_rotator.postgres.connect import QueryCancel, connection
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.fingerprint import Fingerprint, apply_settings, fingerprint_like
from render_rotator.postgres.inventory import Inventory, compare
from render_rotator.postgres.manager import BackupInfo, DatabaseManager
from render_rotator.postgres.side_by_side import side_by_side
from render_rotator.postgres.size import user_data_bytes
from render_rotator.postgres.url import parse_url
from render_rotator.render import DEPLOY_SUCCESSFUL, Deploy, Postgres, is_free_tier_refusal
from render_rotator.render.expiry import expiry_of
from render_rotator.rotation import blueprints, guard, naming, recovery, services
from render_rotator.rotation import rescue as rescuing
from render_rotator.rotation import write_freeze as freezing
from render_rotator.rotation.access import explain_unreachable
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.decisions import FallBackToDeleteFirst, Outcome, RedoPhases, ask
from render_rotator.rotation.drift import old_database_changes
from render_rotator.rotation.free_slot import create_when_slot_frees
from render_rotator.rotation.naming import is_rotation_of
from render_rotator.rotation.report import derive_report, describe_postgres
from render_rotator.rotation.state import (
    BackupFacts,
    CopySummary,
    CreateRequest,
    DatabaseSpec,
    DeployRecord,
    DriftSummary,
    FrozenServices,
    RotationState,
    RunSummary,
    TargetState,
    VerificationSummary,
)
from render_rotator.rotation.targets import (
    TargetValue,
    fingerprint,
    new_value,
    points_at,
    read_target,
)

log = logging.getLogger("render_rotator.rotation")

#: a phase returns True (done), False (skipped) or decisions for the runner (decisions.py)
Phase = Callable[[Rotation], Outcome]
_FIRST_POLL = 0.25  # seconds before the first re-check of a wait; the client doubles it
# waits inside the write freeze (a delete-first provision, the deploys) poll at least this
# often: each second of overshoot is a second of downtime; 60 GETs a minute at most
_FROZEN_MAX_POLL = 1.0


# -- inspect ----------------------------------------------------------------------------


def _candidates(ctx: Rotation) -> list[Postgres]:
    """Databases that are this config entry's database or a rotation of it (configured one
    first when it is given by id)."""
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
            if p.id != pg.id and is_rotation_of(pg.name, p.name, ctx.db.new_name)
        ]
        return [pg, *siblings]
    assert ctx.db.name is not None
    found = [
        p
        for p in ctx.client.list_postgres(owner_id=owner)
        if is_rotation_of(ctx.db.name, p.name, ctx.db.new_name)
    ]
    if not found:
        raise UsageError(
            f"no Render database named {ctx.db.name!r} (or a rotation of it) was found",
            hint="check the name in the config and that RENDER_API_KEY belongs to its workspace",
        )
    return found


def _created(pg: Postgres) -> datetime:
    return pg.created_at or datetime.min.replace(tzinfo=UTC)


def _discover(ctx: Rotation) -> tuple[Postgres, Postgres | None, list[TargetValue], bool]:
    """Which database is the old one, and whether a half-done rotation's new one exists.

    The old database is the one the targets point at. A rotation of it created later that no
    target uses yet (or only some do: a repoint cut short) is a half-done rotation's new
    database: it is finished rather than another one created. So is one that every target
    uses already when a rotation died after its repoint (the last value is True then: see
    `recovery.interrupted_cutover`).
    """
    listed = _candidates(ctx)
    candidates = sorted(listed, key=_created)
    infos = {p.id: ctx.connection_info(p.id) for p in candidates}
    values = [read_target(ctx.client, t) for t in ctx.db.targets]
    pointed = [p for p in candidates if any(points_at(v.value, infos[p.id]) for v in values)]
    if len(pointed) > 2:
        raise UsageError(
            f"the targets of {ctx.db.label} point at {len(pointed)} different databases "
            f"({', '.join(p.id for p in pointed)})",
            hint="make every target use the same database before rotating",
        )
    new: Postgres | None = None
    source = (
        recovery.interrupted_cutover(ctx, pointed[0], candidates) if len(pointed) == 1 else None
    )
    if source is not None:
        old, new = source, pointed[0]  # a rotation cut after its repoint
    elif len(pointed) == 2:
        old, new = pointed  # oldest first: a repoint that was cut short
    elif pointed:
        old = pointed[0]
    elif ctx.db.id:
        old = listed[0]
    elif ctx.db.targets or len(candidates) == 1:
        exact = [p for p in candidates if p.name == ctx.db.name]
        old = (exact or candidates)[0]  # with targets, _inspect_targets says what is wrong
    else:
        raise UsageError(
            f"{len(candidates)} rotations of {ctx.db.label} exist on Render "
            f"({', '.join(f'{p.id} ({p.name})' for p in candidates)}) and no target tells "
            "which one is in use",
            hint='put id = "dpg-..." of the one in use in the config (or add its targets)',
        )
    if new is None and pointed:
        # only targets can tell a half-done rotation from a database in use: without them,
        # a newer database is never taken over (its data could be live)
        version = ctx.db.version or old.version
        newer = [
            p
            for p in candidates
            if _created(p) > _created(old)
            and (p.plan, p.region, p.version) == (old.plan, old.region, version)
        ]
        new = newer[-1] if newer else None
    for other in candidates:
        if other.id not in (old.id, new.id if new else None):
            ctx.report.notes.append(
                f"{other.id} ({other.name}) is another rotation of {ctx.db.label} that no "
                "target uses; it was left alone"
            )
    if new is not None:
        log.warning(
            "found %s (%s), created after %s: finishing that half-done rotation instead of "
            "creating another database",
            new.id,
            new.name,
            old.id,
        )
        ctx.report.notes.append(f"finished a half-done rotation found on Render ({new.id})")
    return old, new, values, source is not None


def _deletion_started(ctx: Rotation) -> bool:
    """Whether this rotation itself may have deleted the old database (then crashed)."""
    began = ("started", "failed", "done", "skipped", "redo")
    deleting = any(ctx.journal.status_of(name) in began for name in ("delete-old", "retire"))
    return deleting and bool(ctx.state.backup)


def inspect(ctx: Rotation) -> bool:
    """Find the old database, its targets and (if any) a half-done rotation's new database."""
    state = ctx.state
    values: list[TargetValue] | None = None
    fresh = not state.old_id
    if not fresh:
        old = ctx.old  # resuming: the journal knows which is which
        new = ctx.new
        if new is None and state.new_id:
            _forget_vanished_new(ctx)
        if old is None and not state.old_deleted:
            if _deletion_started(ctx):
                log.info("%s is gone: the interrupted run had deleted it", state.old_id)
                state.old_deleted = True
            elif guard.copy_proven(ctx) and new is not None:
                # deleted by someone else after the copy was proven: finish on the new one
                guard.old_now(ctx)
            else:
                raise RotationError(
                    f"the old database {state.old_id} no longer exists on Render, and "
                    "this rotation did not delete it",
                    hint="if a backup was taken it is named in the journal; restore it with "
                    "`render-rotator restore`",
                )
    elif (lost := recovery.find_lost(ctx)) is not None:
        # a fresh machine after a delete-first run deleted the old database: the backup
        # (in backup_dir or --backup) is the only copy of its data; finish from it
        new, values = recovery.take_over(ctx, lost)
        old = None
    else:
        old, new, values, cut_over = _discover(ctx)
        state.old_id, state.old_name = old.id, old.name
        state.owner_id = ctx.config.render.owner_id or old.owner_id
        state.requested_strategy = ctx.settings.strategy
        state.strategy = (
            "delete-first" if ctx.settings.strategy == "delete-first" else "create-first"
        )
        if new is not None and cut_over:
            # every target uses it: never emptied; the dead run's lease names what it froze
            recovery.finish_cutover(ctx, old, new)
            state.new_id, state.new_name = new.id, new.name
            ctx.set_new(new)
        elif new is not None:
            # found on Render, not made by this journal: empty it before copying into it, and
            # the services that rotation froze count as frozen by us
            state.new_id, state.new_name = new.id, new.name
            state.new_adopted = state.adopt_frozen = True
            ctx.set_new(new)
        ctx.set_old(old)
    if old is not None:
        expiry = expiry_of(old)
        rescuing.check_expiry(ctx, old, expiry)
        state.old_spec = DatabaseSpec(
            name=old.name,
            plan=old.plan,
            version=old.version,
            region=old.region,
            database_name=old.database_name,
            database_user=old.database_user,
            ip_allow_list=[e.to_api() for e in old.ip_allow_list],
            environment_id=old.environment_id,
            # without expiresAt, a free database expires 30 days after it was created; a
            # rescued one keeps the expiry it had before its upgrade
            expires_at=expiry.expires_at.isoformat()
            if expiry
            else (state.rescue.expired_at if state.rescue else None),
        )
    spec = state.known_spec
    _refuse_downgrade(ctx, spec.version)
    ctx.report.old = {
        "id": state.old_id,
        "name": state.old_name,
        "expires_at": spec.expires_at,
        "version": spec.version,
        "plan": spec.plan,
    }
    _inspect_targets(ctx, new, values)
    if fresh:
        _preflight(ctx)
    # an expired database cannot be reached before its rescue upgrade (the upgrade phase checks)
    upgrading = state.rescue and not ctx.journal.is_done("upgrade")
    if old is not None and not ctx.journal.is_done("backup") and not upgrading:
        _check_client(ctx)
        _check_backup_dir(ctx)
    ctx.save()
    return True


def _check_backup_dir(ctx: Rotation) -> None:
    """backup_dir must take a file before anything is frozen: found out at backup, it would
    cost the app a freeze for nothing. Probed with a file created and removed at once in it
    (or in the nearest existing folder above it, which will hold it), so a dry run leaves
    nothing behind."""
    backup_dir = ctx.settings.backup_dir
    probe_in = backup_dir
    while not probe_in.exists() and probe_in.parent != probe_in:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(20, "not a directory")
        with tempfile.NamedTemporaryFile(dir=probe_in, prefix=".render-rotator-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"backup_dir {backup_dir} cannot hold a backup: {exc.strerror or exc}",
            hint="set backup_dir in the config to a writable directory",
        ) from None


def _forget_vanished_new(ctx: Rotation) -> None:
    """The journal names a new database that no longer exists: a landing deleted it but
    could not record so (a full disk). Before any target used it, provisioning again is
    safe; after, there is nothing sound to do alone."""
    state = ctx.state
    if state.any_repointed:
        raise RotationError(
            f"the new database {state.new_id} that targets were pointed at no longer exists",
            hint="point the targets back at the old database (or restore the backup named in "
            "the journal), then run `rotate --restart`",
        )
    log.warning(
        "the new database %s recorded in the journal no longer exists (deleted when an "
        "earlier run landed on the old one): provisioning again",
        state.new_id,
    )
    reason = f"the new database {state.new_id} vanished before any target used it"
    state.new_id = state.new_name = None
    state.new_adopted = False
    ctx.set_new(None)
    ask(state, RedoPhases(("provision", "copy", "verify"), reason), "inspect")
    ctx.save()


def _refuse_downgrade(ctx: Rotation, current: str | None) -> None:
    """A configured version older than the database's: refused before anything changes
    (pg_dump's archive of a newer server does not restore into an older one)."""
    wanted = ctx.db.version
    if not (wanted and current and current.isdigit()) or int(wanted) >= int(current):
        return
    raise UsageError(
        f"{ctx.db.label}: version = {wanted} is older than the database's PostgreSQL "
        f"{current}; a rotation never downgrades",
        hint=f'set version = "{current}" or newer, or remove version to keep {current}',
    )


def _preflight(ctx: Rotation) -> None:
    """Refusals that must come before anything changes: a service deploy_only cannot
    redeploy, a Blueprint that would undo the rotation (rotation/services.py, blueprints.py)."""
    services.check_deploy_only(ctx)
    blueprints.check_blueprints(ctx)
    services.note_static_sites(ctx)


def _inspect_targets(
    ctx: Rotation, new: Postgres | None, values: list[TargetValue] | None = None
) -> None:
    """Check each target points at the old database (or already at the new one), remember
    what it held (in memory; only a fingerprint goes to the journal)."""
    state = ctx.state
    old_info = ctx.connection_info(state.known_old_id) if ctx.old is not None else None
    new_info = ctx.connection_info(new.id) if new is not None else None
    recorded = state.targets
    ctx.target_values = []
    for i, target in enumerate(ctx.db.targets):
        current = values[i] if values is not None else read_target(ctx.client, target)
        ctx.target_values.append(current)
        entry = recorded.setdefault(target.label, TargetState())
        on_old = points_at(current.value, old_info) if old_info else None
        on_new = points_at(current.value, new_info) if new_info else None
        if current.value is None:
            raise UsageError(
                f"target {target.label} is not set on Render",
                hint="set it to the database's connection string, or remove the target",
            )
        if on_old:
            entry.old_kind, entry.old_sha256 = on_old, fingerprint(current.value)
            ctx.old_values[target.label] = current.value
        elif on_new:
            entry.repointed = True
        elif old_info is None and entry.old_sha256 == fingerprint(current.value):
            pass  # the old database is gone (delete-first); the target still names it
        else:
            raise UsageError(
                f"target {target.label} does not point at {state.old_name} ({state.old_id})",
                hint="check the target's service/env_group and key in the config",
            )


def recheck_targets(ctx: Rotation) -> None:
    """Re-read every target now: each must still point at the old (or the new) database."""
    _inspect_targets(ctx, ctx.new if ctx.state.new_id else None)


def _check_client(ctx: Rotation) -> None:
    """The version rule, checked against the real server before anything changes."""
    manager = ctx.manager()
    old_url = parse_url(ctx.old_url())
    try:
        with connection(
            old_url,
            connect_timeout=ctx.settings.connect_timeout,
            statement_timeout=ctx.settings.command_timeout,
        ) as conn:
            major = server_major_from_num(int(conn.server_version))
    except ConnectError as exc:
        old = ctx.old
        raise (explain_unreachable(old, exc) if old is not None else exc) from None
    manager.use_client_for(old_url, major)


# -- upgrade (rotate --rescue) ------------------------------------------------------------


def upgrade(ctx: Rotation) -> bool:
    """Rescue only: upgrade the expired database to the cheapest paid plan so it can be read
    again, wait until it is available, then check the client against it."""
    if not ctx.state.rescue:
        return False
    rescuing.upgrade(ctx)
    if ctx.lease is not None:  # readable again: it carries the lease from now on
        ctx.lease.acquire(ctx.state.known_old_id, ctx.old_url())
    if not ctx.journal.is_done("backup"):
        _check_client(ctx)
    ctx.save()
    return True


# -- freeze -----------------------------------------------------------------------------


def freeze(ctx: Rotation) -> bool:
    """Stop writes to the old database so the copy misses nothing."""
    mode = ctx.settings.freeze
    if ctx.old is None:
        return False  # nothing left to write to
    if ctx.state.frozen is None:
        ctx.state.frozen = FrozenServices(mode=mode)
    frozen = ctx.state.frozen
    if not frozen.in_window and mode != "none":
        frozen.started_at = time.time()
    freezing.freeze(ctx, mode, frozen)
    ctx.save()
    return mode != "none"


# -- backup -----------------------------------------------------------------------------


def backup(ctx: Rotation) -> bool:
    """A verified archive on disk (readable, hashed, with the source inventory) before any
    deletion can happen. create-first, once the new database is available, copies beside
    it in the same snapshot (`beside`, `_backup_beside_copy`)."""
    state = ctx.state
    existing = state.backup
    path_done = Path(existing.path) if existing else None
    intact = bool(
        existing and path_done and path_done.exists() and sha256_path(path_done) == existing.sha256
    )
    if beside(ctx, "backup") == "copy":
        return _backup_beside_copy(ctx, backed_up=intact)
    if intact:
        return True
    if ctx.old is None:
        raise RotationError(
            "the old database is gone and no intact backup exists",
            hint=f"look for archives in {ctx.settings.backup_dir}; if it was moved, run "
            "`render-rotator resume --backup PATH`",
        )
    path, stamp = _backup_path(ctx)
    info = _take_backup(ctx, ctx.manager(), path)
    _record_backup(ctx, path, stamp, info)
    # the copy's expected size, by the measure the copy progress and the report use
    state.source_bytes = _user_data_bytes(ctx, ctx.old_url())
    ctx.save()
    return True


def _backup_path(ctx: Rotation) -> tuple[Path, str]:
    """A new archive's path in backup_dir (made if needed), stale partials removed; and
    the time stamp in its name."""
    state = ctx.state
    backup_dir = ctx.settings.backup_dir
    try:
        backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create backup_dir {backup_dir}: {exc.strerror}",
            hint="set backup_dir in the config to a writable directory",
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"{state.old_name}-{state.old_id}-"
    remove_stale_partials(backup_dir, prefix)  # this database's lock is ours: none is live
    path = backup_dir / f"{prefix}{stamp}.dump"
    for n in range(2, 100):  # two runs in the same second (a retry right after a failure)
        if not path.exists():
            break
        path = backup_dir / f"{prefix}{stamp}-{n}.dump"
    return path, stamp


def _take_backup(
    ctx: Rotation,
    manager: DatabaseManager,
    path: Path,
    *,
    snapshot: str | None = None,
    cancel: QueryCancel | None = None,
) -> BackupInfo:
    """pg_dump the old database to `path` (in `snapshot` when given), with its inventory
    and content fingerprint taken in the same snapshot."""
    if ctx.settings.jobs > 1:
        # inside the write freeze, so fast: parallel workers, a directory archive that the
        # delete-first path restores in parallel too, cheapest good compression
        return manager.backup_database(
            ctx.old_url(),
            path,
            archive_format="directory",
            jobs=ctx.settings.jobs,
            compress=best_compression(manager.client),
            verify_mode=ctx.settings.verify,
            snapshot=snapshot,
            cancel=cancel,
        )
    return manager.backup_database(
        ctx.old_url(), path, verify_mode=ctx.settings.verify, snapshot=snapshot, cancel=cancel
    )


def _record_backup(ctx: Rotation, path: Path, stamp: str, info: BackupInfo) -> None:
    """The manifest beside the archive, and the backup's facts in the journal."""
    state = ctx.state
    assert info.inventory is not None and info.fingerprint is not None
    manifest = {
        "database": state.old_name,
        "postgres_id": state.old_id,
        "created_at": stamp,
        "archive": info.to_dict(),
        **recovery.manifest_extras(ctx),
    }
    manifest_path = path.with_name(path.name + ".json")
    write_private(manifest_path, json.dumps(manifest, indent=2, default=str))
    state.backup = BackupFacts(
        path=str(path),
        manifest=str(manifest_path),
        sha256=info.sha256,
        size_bytes=info.archive.size_bytes,
        format=info.archive.format,
    )
    state.inventory = info.inventory.to_dict()
    # the content fingerprint of the backup's snapshot (definitions and settings as digests:
    # the journal holds no values); the manifest beside the archive holds the full one
    state.fingerprint = info.fingerprint.to_dict(digests=True)
    ctx.save()
    log.info("verified backup of %s: %s", state.old_name, path)


def beside(ctx: Rotation, name: str) -> str | None:
    """The phase that runs side by side with phase `name` now, if any (the runner journals
    both): create-first's copy beside its backup, once the new database is available.

    Both read one exported snapshot of the old database, so the backup, the copy and the
    fingerprint that verify checks the new database against are all the same state, and
    the copy no longer waits for the backup inside the write freeze."""
    state = ctx.state
    if name != "backup" or not provisions_early(state) or ctx.journal.is_done("copy"):
        return None
    if not (state.new_id and ctx.journal.is_done("provision")) or ctx.old is None:
        return None
    return "copy"


def own_seconds(ctx: Rotation, name: str) -> float | None:
    """The time of phase `name` itself when it ran beside another: the copy engine's."""
    copied = ctx.state.copy
    return copied.seconds if name == "copy" and copied is not None else None


def _backup_beside_copy(ctx: Rotation, *, backed_up: bool) -> bool:
    """create-first: the backup and the copy side by side in one snapshot of the old
    database (postgres/side_by_side.py). Either failing stops the other, and the rotation
    stops before any cutover (a copy without its verified backup and fingerprint is never
    used). `backed_up`: an intact backup exists already (a run killed right after it):
    only the copy runs, in a snapshot of its own; verify proves it equal to the backup."""
    old_url, new_url = ctx.old_url(), ctx.new_url()
    _prepare_copy(ctx)
    if backed_up:
        _copy_direct(ctx, old_url, new_url)
        return True
    path, stamp = _backup_path(ctx)
    manager = ctx.manager()
    taken: list[BackupInfo] = []

    def take_backup(snapshot: str, stop: QueryCancel) -> BackupInfo:
        taken.append(_take_backup(ctx, manager, path, snapshot=snapshot, cancel=stop))
        return taken[0]

    def take_copy(snapshot: str, stop: QueryCancel) -> None:
        _copy_direct(ctx, old_url, new_url, snapshot=snapshot, stop=stop)

    try:
        # a failure of either side raises SideFailed naming it: the runner records it there
        side_by_side(
            old_url,
            beside=("backup", take_backup),
            main=("copy", take_copy),
            connect_timeout=ctx.settings.connect_timeout,
            statement_timeout=ctx.settings.command_timeout,
        )
    except BaseException:
        if taken:  # a finished backup keeps its manifest and is journaled, whatever the copy did
            with contextlib.suppress(Exception):
                _record_backup(ctx, path, stamp, taken[0])
        raise
    _record_backup(ctx, path, stamp, taken[0])
    return True


# -- delete-old (delete-first) ----------------------------------------------------------


def delete_old(ctx: Rotation) -> bool:
    """Free the one free-database slot, only after the backup is proven."""
    if ctx.state.strategy != "delete-first":
        return False
    if ctx.state.old_deleted:
        return True
    old_id = ctx.state.old_id
    if guard.delete_old(ctx):
        log.info("deleted the old database %s (backup %s)", old_id, ctx.state.known_backup.path)
    return True


# -- provision --------------------------------------------------------------------------


def _new_fields(ctx: Rotation, name: str) -> dict[str, object]:
    spec = ctx.state.known_spec
    rescue = ctx.state.rescue
    fields: dict[str, object] = {
        "name": name,
        "ownerId": ctx.state.owner_id,
        # a rescued database is on a paid plan only to be read: the new one is free again
        "plan": (rescue.plan if rescue else None) or spec.plan,
        "version": ctx.db.version or spec.version,
        "region": spec.region,
        "databaseName": spec.database_name,
        "databaseUser": spec.database_user,
    }
    # exactly, empty included: Render opens a database created without a list to everyone,
    # while an empty list admits no connection from outside Render
    fields["ipAllowList"] = list(spec.ip_allow_list)
    if spec.environment_id:
        fields["environmentId"] = spec.environment_id
    return fields


def provision(ctx: Rotation) -> bool | FallBackToDeleteFirst:
    """Create the replacement (same plan, version, region, names, allow list) and wait for it.

    With strategy auto, a refused second free database returns FallBackToDeleteFirst: the
    runner deletes the old database (delete-old, after the verified backup) and runs this
    phase again."""
    state = ctx.state
    new = ctx.new if state.new_id else None
    if new is None:
        name = state.new_name or naming.new_name(
            ctx.db.new_name, state.known_spec.name, ctx.today or date.today()
        )
        # written before the create call: a run resumed on another day must look for the
        # same name, not create a second database under a new date
        state.new_name = name
        ctx.save()
        same_name = [
            p
            for p in ctx.client.list_postgres(name=name, owner_id=state.owner_id)
            if p.name == name and p.id != state.old_id
        ]
        if same_name:
            new = same_name[0]
            guard.check_reuse(ctx, new)  # only a database a rotation of this one created
            state.new_adopted = True
            log.info("reusing %s (%s) created by an earlier attempt", new.id, name)
        else:
            # the journal proves the create request: a database of this name that Render
            # made after it is ours, even if we die before marking it
            state.creating = CreateRequest(name=name, requested_at=time.time())
            ctx.save()
            created = _create(ctx, name)
            if isinstance(created, FallBackToDeleteFirst):
                state.creating = None  # refused: nothing was created
                ctx.save()
                return created
            new = created
            state.created_ids.append(new.id)
        state.new_id = new.id
        ctx.save()
    timeout = ctx.settings.provision_timeout
    frozen = state.frozen is not None and state.frozen.in_window
    try:
        with ctx.ui.waiting(f"{new.id} to become available"):
            new = ctx.client.wait_for_postgres(
                new.id,
                status="available",
                timeout=timeout,
                poll_interval=_FIRST_POLL,
                max_poll_interval=_FROZEN_MAX_POLL if frozen else 10.0,
            )
    except APITimeoutError:
        if ctx.old is not None:
            _drop_new(ctx, "it never became available")
            raise RotationError(
                f"the new database {new.id} did not become available within {timeout:g}s; "
                "it was deleted and the old database stays in use",
                hint="try again later, or raise provision_timeout",
            ) from None
        raise RotationError(
            f"the new database {new.id} did not become available within {timeout:g}s",
            hint="run `render-rotator resume` once Render shows it available; the backup "
            f"{state.known_backup.path} holds the data",
        ) from None
    ctx.set_new(new)
    guard.mark_new(ctx, new)
    ctx.report.new = describe_postgres(new)
    if not frozen and ctx.old is not None:
        # the copy's expected size (for its progress), measured before the freeze: the copy
        # starts at once beside the backup (delete-first measures after its backup)
        state.source_bytes = _user_data_bytes(ctx, ctx.old_url())
    ctx.save()
    return True


def _drop_new(ctx: Rotation, why: str) -> None:
    """Delete the new database (nothing uses it yet): landing back on the old one."""
    guard.drop_new(ctx, why)


def _create(ctx: Rotation, name: str) -> Postgres | FallBackToDeleteFirst:
    if ctx.state.old_deleted or ctx.state.rescue:
        # the slot of the deleted (or upgraded) free database may take a while to free
        return create_when_slot_frees(ctx, _new_fields(ctx, name))
    try:
        return ctx.client.create_postgres(**_new_fields(ctx, name))
    except ConflictError as exc:
        refused_free = is_free_tier_refusal(exc)
        falls_back = ctx.state.requested_strategy == "auto"
        if not refused_free or not falls_back or ctx.state.strategy != "create-first":
            if refused_free:
                raise RotationError(
                    f"Render refused a second free database: {exc.message}",
                    hint='set strategy = "auto" or "delete-first" for free databases',
                ) from None
            raise
    # Nothing is deleted here: provision runs before the freeze (`phase_order`); the runner
    # switches to delete-first, whose order puts freeze, backup and delete-old (after the
    # verified backup, through the guard) before provision runs again.
    return FallBackToDeleteFirst(
        "Render refused a second free database: delete the old one first (after the "
        "verified backup), then create the new one"
    )


# -- copy / restore ----------------------------------------------------------------------


def copy(ctx: Rotation) -> bool:
    """Fill the new database from the verified backup (the snapshot taken under the freeze).

    A database this run did not just create empty (an earlier attempt's, or one whose copy
    was cut short) is emptied first, so the copy can always simply be run again.
    """
    state = ctx.state
    new_url = ctx.new_url()
    manager = ctx.manager()
    _prepare_copy(ctx)
    inventory = Inventory.from_dict(state.known_inventory)
    if ctx.old is not None and state.strategy == "create-first":
        # both databases exist: stream them directly, in parallel, in one snapshot
        _copy_direct(ctx, ctx.old_url(), new_url)
        return True
    path = Path(state.known_backup.path)
    progress = ctx.ui.copy_progress(total_bytes=state.source_bytes, total_rows=inventory.total_rows)
    with progress:
        with ctx.ui.watch_copy(
            new_url,
            progress,
            expected_rows=inventory.tables,
            connect_timeout=ctx.settings.connect_timeout,
        ):
            # the verify phase compares the result with the backup's inventory: anything
            # that was already there is named as a difference, with the way out
            result = manager.restore_database(new_url, path, require_empty=False)
        _measure_copied(ctx, new_url, progress)
    # pg_restore without --create leaves the database's own settings out
    apply_settings(new_url, _backup_settings(ctx), connect_timeout=ctx.settings.connect_timeout)
    state.copy = CopySummary(
        method="pg_restore", seconds=round(result.seconds, 3), skipped=list(result.skipped)
    )
    _note_skipped(ctx, result.skipped)
    return True


def _prepare_copy(ctx: Rotation) -> None:
    """Empty the new database when it may hold anything (an adopted one, a copy cut short),
    and journal that a copy into it began."""
    state = ctx.state
    if state.copy_started or state.new_adopted:
        dropped = guard.empty_new(ctx)
        log.info("emptied %s before copying (%d objects dropped)", state.new_id, dropped)
    state.copy_started = True
    ctx.save()


def _copy_direct(
    ctx: Rotation,
    old_url: str,
    new_url: str,
    *,
    snapshot: str | None = None,
    stop: QueryCancel | None = None,
) -> None:
    """Stream the old database into the new one, in parallel, in one snapshot (`snapshot`,
    exported by the caller, when given)."""
    state = ctx.state
    inventory = Inventory.from_dict(state.inventory) if state.inventory else None
    progress = ctx.ui.copy_progress(
        total_bytes=state.source_bytes,
        total_rows=inventory.total_rows if inventory is not None else None,
    )
    with progress:
        with ctx.ui.watch_copy(
            new_url,
            progress,
            track_rows=False,  # the copy engine counts rows itself
            connect_timeout=ctx.settings.connect_timeout,
        ):
            copied = copy_database(
                old_url,
                new_url,
                jobs=ctx.settings.jobs,
                connect_timeout=ctx.settings.connect_timeout,
                command_timeout=ctx.settings.command_timeout,
                pg_bin=ctx.pg_bin,
                progress=lambda p: _copy_progress(progress, p),
                snapshot=snapshot,
                stop=stop,
            )
        _measure_copied(ctx, new_url, progress)
    state.copy = CopySummary(
        method=f"parallel copy (jobs={ctx.settings.jobs})",
        seconds=round(copied.seconds, 3),
        bytes=copied.bytes,
        skipped=list(copied.skipped),
    )
    _note_skipped(ctx, copied.skipped)


def _note_skipped(ctx: Rotation, entries: list[str]) -> None:
    skipped = [f"skipped during restore (needs a superuser): {s}" for s in entries]
    ctx.report.notes.extend(n for n in skipped if n not in ctx.report.notes)
    ctx.save()


def _backup_settings(ctx: Rotation) -> dict[str, str]:
    """The old database's settings (`ALTER DATABASE ... SET`), from the backup's manifest."""
    manifest = ctx.state.backup.manifest if ctx.state.backup else None
    if not manifest or not Path(manifest).exists():
        raise RotationError(
            "the backup's manifest is missing, so the database settings cannot be restored",
            hint=f"it should be beside the archive in {ctx.settings.backup_dir}",
        )
    data = json.loads(Path(manifest).read_text())
    fingerprint = (data.get("archive") or {}).get("fingerprint") or {}
    return dict(fingerprint.get("settings") or {})


def _copy_progress(progress: Any, report: Any) -> None:
    """Feed the copy engine's row count to the UI; bytes come from the size on disk (one
    measure for the progress and the report, see render_rotator.postgres.size)."""
    progress.update("all tables", 0, report.rows_done)


def _measure_copied(ctx: Rotation, new_url: str, progress: Any) -> None:
    """Measure the copied data once: the last progress line and the report show this."""
    size = _user_data_bytes(ctx, new_url)
    ctx.state.bytes_copied = size
    if size is not None:
        progress.measure_bytes(size)


# -- verify -----------------------------------------------------------------------------


def _user_data_bytes(ctx: Rotation, url: str) -> int | None:
    """Bytes of tables, their indexes and TOAST in the user's schemas (the one measure)."""
    with connection(
        url,
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    ) as conn:
        return user_data_bytes(conn)


def verify(ctx: Rotation) -> bool:
    """The new database must hold exactly what the backup's snapshot held (by content, or
    by counts with verify = "counts"), and (while it exists) the old database must still
    hold exactly that too: a write that got past the freeze after the backup would otherwise
    be lost at the cutover."""
    state = ctx.state
    stored = state.fingerprint
    if not stored:
        raise RotationError(
            "this rotation's journal has no content fingerprint of the backup (it was started "
            "by an older version), so the copy cannot be verified",
            hint="start a new rotation with `render-rotator rotate`",
        )
    source = Fingerprint.from_dict(stored)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
        # the new database and (while it exists) the old one, side by side
        new_side = pool.submit(
            fingerprint_like,
            ctx.new_url(),
            source,
            jobs=ctx.settings.jobs,
            connect_timeout=ctx.settings.connect_timeout,
            statement_timeout=ctx.settings.command_timeout,
        )
        old_side = pool.submit(old_database_changes, ctx) if ctx.old is not None else None
        diffs, tables = old_side.result() if old_side is not None else ([], [])
        target = new_side.result()
    if diffs:
        # did anything write to the old database after the backup? Then that is the
        # problem (the copy would miss those rows), whatever the copy looks like
        state.verified = False
        state.drift = DriftSummary(tables=list(tables), differences=len(diffs))
        ctx.save()
        raise DriftError(
            "the old database changed after the backup was taken (writes were not "
            f"frozen: freeze = {ctx.settings.freeze}; tables: {', '.join(tables) or '-'})",
            differences=[f"old database since the backup: {d}" for d in diffs],
            tables=tables,
        )
    result = compare(source, target, time.monotonic() - started)
    ctx.report.rows_copied = source.total_rows
    state.verification = VerificationSummary(
        mode=result.mode,
        seconds=round(result.seconds, 3),
        tables=result.tables_compared,
        rows=result.rows_compared,
    )
    if not result.equal:
        state.verified = False
        ctx.save()
        raise VerificationError(
            f"the new database does not match the backup of the old one: {result.summary()}",
            differences=result.differences,
        )
    state.verified = True
    guard.record_copy_proof(ctx, method=result.mode)
    state.rows_copied = source.total_rows
    if state.bytes_copied is None:  # measured when the copy ended (same measure)
        state.bytes_copied = _user_data_bytes(ctx, ctx.new_url())
    ctx.save()
    log.info("%s", result.summary())
    return True


# -- repoint ----------------------------------------------------------------------------


def repoint(ctx: Rotation) -> bool:
    """Point every target at the new database, one key at a time."""
    if not ctx.state.verified:
        raise RotationError("refusing to repoint: the copy was not verified")
    info = ctx.connection_info(ctx.state.known_new_id)
    for current in ctx.target_values:
        entry = ctx.state.targets[current.label]
        if entry.repointed:
            continue
        value = new_value(current.value, info, current.target.connection)
        guard.write_target(ctx, current, value, to="new")
        entry.repointed = True
        ctx.save()
        log.info("repointed %s to %s", current.label, ctx.state.new_id)
    return True


def restore_old_values(ctx: Rotation) -> list[str]:
    """Put targets back on the old database (it must still exist); returns labels restored."""
    restored = []
    old_info = ctx.connection_info(ctx.state.known_old_id)
    for current in ctx.target_values:
        entry = ctx.state.targets.get(current.label)
        if entry is None or not entry.repointed:
            continue
        value = ctx.old_values.get(current.label)
        if value is None:
            kind = entry.old_kind or current.target.connection
            value = (
                old_info.internal_connection_string
                if kind == "internal"
                else old_info.external_connection_string
            )
        guard.write_target(ctx, current, value, to="old")
        entry.repointed = False
        restored.append(current.label)
        ctx.save()
    return restored


# -- deploy -----------------------------------------------------------------------------


def deploy(ctx: Rotation) -> bool:
    """Thaw the services and redeploy each once so it reads the new URL; wait until live.

    The old database is fenced (read-only) first, so nothing still running the old deploy can
    write where no one will look. Services in maintenance mode stay there until their new
    deploy is live. A failed deploy puts the old values back when the old database still
    exists, lifts the fence and redeploys.
    """
    state = ctx.state
    if guard.old_now(ctx) is not None:
        freezing.fence(ctx)
    freezing.thaw_services(ctx, maintenance=False)
    failed = run_deploys(ctx, "deploys")
    if not failed:
        freezing.thaw_services(ctx)
        freezing.end_window(ctx)
        if ctx.old is not None and ctx.settings.keep_old:
            freezing.unfence(ctx)  # kept as a fallback: usable again
        return True
    what = ", ".join(f"{svc} ({status})" for svc, status in failed)
    if guard.old_now(ctx) is None:  # re-read: someone may have deleted it meanwhile
        raise RotationError(
            f"deploy failed for {what}; the new database holds the verified copy and the old "
            "one is gone, so nothing was rolled back: every target stays on the new one",
            hint="fix the service, then run `render-rotator resume` to deploy again (or "
            "redeploy it from the Render dashboard)",
        )
    restored = restore_old_values(ctx)
    freezing.unfence(ctx)
    state.rolled_back = True
    ctx.save()
    rollback_failed = run_deploys(ctx, "rollback_deploys")
    freezing.thaw(ctx)
    again = (
        "; the redeploy on the old database failed too: "
        + ", ".join(f"{svc} ({status})" for svc, status in rollback_failed)
        if rollback_failed
        else " and redeployed"
    )
    raise RotationError(
        f"deploy failed for {what}; {len(restored)} target(s) were put back on the old "
        f"database {state.old_id}{again}",
        hint="fix the service, then run rotate again",
    )


def _failed(record: DeployRecord) -> bool:
    status = record.status
    return status is not None and status not in {s.value for s in DEPLOY_SUCCESSFUL}


def _find_deploy_since(ctx: Rotation, service_id: str, since: float) -> Deploy | None:
    """A deploy of `service_id` triggered through the API at or after `since` (epoch)."""
    for candidate in ctx.client.list_deploys(service_id, limit=5):
        created = candidate.created_at.timestamp() if candidate.created_at else None
        if created is not None and created >= since - 5 and candidate.trigger in (None, "api"):
            return candidate
    return None


def _trigger(ctx: Rotation, service_id: str, records: dict[str, DeployRecord]) -> None:
    """Trigger one deploy, never two: after an ambiguous failure (Render may have acted) or
    a crash between the request and the journal, look for the deploy before asking again."""
    record = records.get(service_id) or DeployRecord()
    since = record.requested_at
    if since is not None and record.deploy_id is None and not _failed(record):
        found = _find_deploy_since(ctx, service_id, since)
        if found is not None:
            log.info("found deploy %s of %s from the interrupted run", found.id, service_id)
            records[service_id] = DeployRecord(requested_at=since, deploy_id=found.id)
            ctx.save()
            return
    requested = time.time()
    record = DeployRecord(requested_at=requested)
    records[service_id] = record
    ctx.save()
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            deploy_obj = ctx.client.trigger_deploy(service_id, deploy_mode=services.DEPLOY_MODE)
        except (ServerError, APITimeoutError) as exc:
            found = _find_deploy_since(ctx, service_id, requested)
            if found is not None:
                deploy_obj = found
            elif attempt == attempts:
                raise
            else:
                log.warning("deploy of %s not started (%s); trying again", service_id, exc)
                time.sleep(attempt)
                continue
        record.deploy_id = deploy_obj.id if deploy_obj else None
        ctx.save()
        return


def run_deploys(ctx: Rotation, key: str) -> list[tuple[str, str]]:
    """Trigger (once) and await a deploy per service; returns the ones that failed.

    A deploy recorded as failed (by an earlier run) is triggered again.
    """
    records = ctx.state.deploys if key == "deploys" else ctx.state.rollback_deploys
    for service_id in services.runtime_services(ctx):
        record = records.get(service_id) or DeployRecord()
        if record.deploy_id and not _failed(record):
            continue
        try:
            _trigger(ctx, service_id, records)
        except RenderAPIError as exc:
            if exc.status_code != 400:
                raise
            # Render refused to start it (deploy_only with no build left to ship, say): a
            # failed deploy, so the caller's rollback puts every service back, redeployed
            records[service_id] = DeployRecord(status="refused", reason=exc.message)
            ctx.save()
    failed = []
    for service_id, record in records.items():
        if record.status == "refused":
            failed.append((service_id, f"refused by Render: {record.reason}"))
            continue
        if record.deploy_id is None:
            record.status = "unknown"
            ctx.report.notes.append(f"could not identify the deploy of {service_id}")
            continue
        with ctx.ui.waiting(f"deploy {record.deploy_id} of {service_id} to go live"):
            final = ctx.client.wait_for_deploy(
                service_id,
                record.deploy_id,
                timeout=ctx.settings.deploy_timeout,
                poll_interval=_FIRST_POLL,
                max_poll_interval=_FROZEN_MAX_POLL,  # the window ends when it is live
            )
        record.status = final.status_raw
        ctx.save()
        if final.status not in DEPLOY_SUCCESSFUL:
            failed.append((service_id, final.status_raw))
    return failed


# -- retire -----------------------------------------------------------------------------


def retire(ctx: Rotation) -> bool:
    """Delete the old database (create-first), only now that the new one is live."""
    if ctx.state.strategy == "delete-first" or ctx.state.old_deleted:
        return False
    if ctx.settings.keep_old:
        ctx.report.notes.append(f"kept the old database {ctx.state.old_id} (keep_old)")
        rescue = ctx.state.rescue
        if rescue:
            ctx.report.notes.append(
                f"{ctx.state.old_id} is on the paid plan {rescue.upgrade_to}: Render "
                "bills it until you delete it"
            )
        return False
    if not ctx.state.verified:
        raise RotationError("refusing to delete the old database: the copy was not verified")
    return guard.delete_old(ctx)


def report(ctx: Rotation) -> bool:
    """Fill in the final report from the journal, and keep its summary there too."""
    fill_report(ctx)
    ctx.state.summary = RunSummary(
        old_id=ctx.state.old_id,
        new_id=ctx.state.new_id,
        rows_copied=ctx.report.rows_copied,
        bytes_copied=ctx.report.bytes_copied,
        freeze_seconds=ctx.report.freeze_seconds,
        backup=ctx.state.backup.path if ctx.state.backup else None,
    )
    ctx.save()
    return True


def fill_report(ctx: Rotation) -> None:
    """Everything the report says, derived from the journal's state (so a resumed run
    reports the whole rotation, not just its own part); only the new database's current
    expiry is read from Render."""
    new = None
    if ctx.state.new_id:
        with contextlib.suppress(RenderRotatorError):  # a report must not fail on the API
            new = ctx.new
    derive_report(
        ctx.report,
        ctx.state,
        ctx.journal.phases,
        order=tuple(name for name, _ in phase_order(ctx.state)),
        freeze=ctx.settings.freeze,
        new=describe_postgres(new) if new is not None else None,
    )


PHASES: tuple[tuple[str, Phase], ...] = (
    ("inspect", inspect),
    ("upgrade", upgrade),
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


def provisions_early(state: RotationState) -> bool:
    """Whether the new database is made before the freeze: create-first (auto until Render
    refuses a second free database) may hold both databases at once, so the app keeps
    running while Render provisions. A rescue keeps the documented order (its old database
    is unreadable until upgraded anyway), delete-first must free the slot first."""
    return state.strategy == "create-first" and not state.rescue


def phase_order(state: RotationState) -> tuple[tuple[str, Phase], ...]:
    """The phases in the order this rotation runs them now (read again after each phase:
    auto's fallback changes it). Same names either way; only provision moves."""
    if not provisions_early(state):
        return PHASES
    rest = tuple(p for p in PHASES if p[0] != "provision")
    at = [n for n, _ in rest].index("freeze")  # right before the freeze, after upgrade
    return (*rest[:at], ("provision", provision), *rest[at:])
