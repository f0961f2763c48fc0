"""Finish a delete-first rotation whose old database is gone and whose journal is lost.

A delete-first rotation deletes the old database once a verified backup exists. If the run
dies after that on a machine that goes away with its journal (a CI runner), Render shows no
old database: the targets still hold the URL of a database that no longer exists, and maybe a
new database the run had created. The only copy of the data is the backup: the archive and its
manifest (sha256, the source inventory, the old database's spec, a fingerprint of what each
target held), in `backup_dir` or wherever the user downloaded it (``--backup PATH``).

`find_lost` recognises that situation (read-only); `take_over` writes what the manifest proves
into the fresh journal, so the ordinary phases finish the rotation: provision (or adopt the new
database this rotation created: its name, plan, region and creation time must fit), restore
after checking the archive's sha256, verify against the manifest's inventory, repoint, deploy.
Without a backup nothing can be finished: one error says what exists and what to do.

A create-first rotation cut off after its repoint (every target on the new database, the
services still frozen, nothing deployed) leaves both databases on Render: `interrupted_cutover`
recognises it from the new database itself (the creation marker naming its source, which
still exists, and the dead run's lease beside it), so discovery finishes that rotation
(`finish_cutover`: proven equal by content now, then deploy, thaw, retire the source through
the guard) instead of taking the new database for the one in use and rotating it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from render_rotator.errors import NotFoundError, RenderRotatorError, RotationError, UsageError
from render_rotator.postgres.archive import sha256_path
from render_rotator.postgres.fingerprint import Fingerprint, take_fingerprint
from render_rotator.postgres.inventory import (
    Inventory,
    compare,
    compare_inventories,
    take_inventory,
)
from render_rotator.postgres.stamp import read_stamp
from render_rotator.postgres.url import require_tls
from render_rotator.render import Postgres
from render_rotator.rotation import guard, naming
from render_rotator.rotation import lease as lease_mod
from render_rotator.rotation.decisions import AlreadyDone, ask
from render_rotator.rotation.naming import is_rotation_of
from render_rotator.rotation.services import WEB_SERVICE, freeze_action, service_types
from render_rotator.rotation.state import (
    BackupFacts,
    CopySummary,
    DatabaseSpec,
    FrozenServices,
    Recovered,
    TargetState,
)
from render_rotator.rotation.targets import (
    TargetValue,
    endpoint,
    fingerprint,
    points_at,
    read_target,
)

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")

#: Render's clock and the dead run's may differ: a new database created up to this long
#: "before" the backup's timestamp still counts as created after it.
_CLOCK_SLACK = timedelta(minutes=2)
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Backup:
    """A backup archive and its manifest, as found on this machine."""

    manifest_path: Path
    archive: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def postgres_id(self) -> str:
        return str(self.manifest["postgres_id"])

    @property
    def database(self) -> str:
        return str(self.manifest["database"])

    @property
    def created_at(self) -> datetime | None:
        try:
            return datetime.strptime(str(self.manifest.get("created_at")), _STAMP).replace(
                tzinfo=UTC
            )
        except ValueError:
            return None

    @property
    def sha256(self) -> str:
        return str(self.manifest["archive"]["sha256"])

    @property
    def inventory(self) -> dict[str, Any]:
        inv: dict[str, Any] = self.manifest["archive"]["inventory"]
        return inv


@dataclass(frozen=True)
class Lost:
    """An old database that is gone from Render, and the backup that holds its data."""

    backup: Backup
    values: list[TargetValue]
    dead: list[TargetValue]
    on_render: list[Postgres]


def manifest_extras(ctx: Rotation) -> dict[str, Any]:
    """What a backup manifest carries beyond the archive so that a machine without the
    journal can finish the rotation: the old database's spec (to provision its replacement),
    its owner, and a fingerprint of each target's value (to prove the targets used it;
    fingerprints only, never the values, which hold passwords)."""
    state = ctx.state
    return {
        "owner_id": state.owner_id,
        "spec": dataclasses.asdict(state.old_spec) if state.old_spec else None,
        "targets": {
            label: {"old_kind": entry.old_kind, "old_sha256": entry.old_sha256}
            for label, entry in state.targets.items()
            if entry.old_sha256
        },
    }


# -- recognising a lost database --------------------------------------------------------


def _pointing_at_none(
    ctx: Rotation, values: list[TargetValue], databases: list[Postgres]
) -> list[TargetValue]:
    """The targets whose value reaches none of `databases` (unset ones are not counted:
    inspect reports those)."""
    infos = []
    for pg in databases:
        try:
            infos.append(ctx.connection_info(pg.id))
        except NotFoundError:
            continue  # deleted while we looked
    return [
        v
        for v in values
        if endpoint(v.value) is not None and not any(points_at(v.value, info) for info in infos)
    ]


def find_lost(ctx: Rotation) -> Lost | None:
    """The lost old database and its backup, or None when the old database exists (or
    nothing says it was lost: then the ordinary discovery reports what is wrong).

    Lost means: some target holds a connection string of no database on Render (the
    deleted one's dead URL) and a backup of that database is here (or, with no targets, the
    configured database is not on Render and its backup is here). When every target that is
    set holds such a dead URL and there is no backup, this raises the error that says what
    exists and what to do.
    """
    db = ctx.db
    owner = ctx.config.render.owner_id
    if db.id and ctx.postgres(db.id) is not None:
        return None
    everything = ctx.client.list_postgres(owner_id=owner)
    mine = (
        [p for p in everything if is_rotation_of(db.name, p.name, db.new_name)] if db.name else []
    )
    values = [read_target(ctx.client, t) for t in db.targets]
    dead = _pointing_at_none(ctx, values, mine)
    if dead:
        others = [p for p in everything if p not in mine]
        dead = _pointing_at_none(ctx, dead, others)  # on an unrelated database: misconfigured
    if not dead and (values or mine):
        return _cut_before_deploy(ctx, values, mine, everything)
    backup = find_backup(ctx, dead, everything)
    if backup is None:
        if not dead or len(dead) < len([v for v in values if v.value is not None]):
            # no targets, or some use a database that exists: a misconfiguration (or a
            # typo in the name) that the ordinary discovery reports, not a lost database
            return None
        raise _no_backup_error(ctx, dead, everything)
    return Lost(backup=backup, values=values, dead=dead, on_render=everything)


def _cut_before_deploy(
    ctx: Rotation, values: list[TargetValue], mine: list[Postgres], everything: list[Postgres]
) -> Lost | None:
    """Killed after the repoint, before the deploy: every target uses the new database, the
    old one is gone, and every affected service is still frozen. Only when a backup of the
    deleted database is here, the database in use is the one that rotation created, and it
    holds exactly the backup's data: then the deploy (and thaw) is what is left to do.
    Anything short of that is a database in use, rotated as usual."""
    infos = {p.id: ctx.connection_info(p.id) for p in mine}
    set_values = [v for v in values if v.value is not None]
    used = [p for p in mine if any(points_at(v.value, infos[p.id]) for v in set_values)]
    if len(used) != 1 or not set_values or not _all_frozen(ctx):
        return None
    try:
        backup = find_backup(ctx, [], everything)
        if backup is None:
            return None
        lost = Lost(backup=backup, values=values, dead=[], on_render=everything)
        if _own_new(ctx, lost, spec_of(backup), _owner(ctx, backup)) != used[0]:
            return None
    except RenderRotatorError:
        return None
    return lost


def _all_frozen(ctx: Rotation) -> bool:
    """Whether every affected service that a freeze would touch is frozen now."""
    mode = ctx.settings.freeze
    types = service_types(ctx)
    seen = False
    for service_id in ctx.affected_services():
        action = freeze_action(types.get(service_id, WEB_SERVICE), mode)
        if action is None:
            continue
        service = ctx.client.get_service(service_id)
        if not (service.suspended if action == "suspend" else service.maintenance_mode_enabled):
            return False
        seen = True
    return seen


# -- a create-first rotation cut after its repoint ---------------------------------------


def interrupted_cutover(
    ctx: Rotation, used: Postgres, candidates: list[Postgres]
) -> Postgres | None:
    """The source of `used` (the database every target uses) when `used` is the new
    database of a rotation that died after its repoint; None when it is simply in use.

    Read from `used` itself: the creation marker a rotation wrote on it names its source,
    which still exists (a finished rotation deletes it, or keeps it with keep_old and
    releases its lease), and a lease is on it still (the dead run's: a finished run removes
    its record). A live lease there is refused by the lease check that follows."""
    try:
        url = require_tls(ctx.connection_info(used.id).external_connection_string)
        stamp = read_stamp(url, connect_timeout=ctx.settings.connect_timeout)
    except RenderRotatorError as exc:
        log.info("could not read the marker on %s: %s", used.id, exc)
        return None
    marker, held = stamp.get("marker"), stamp.get("lease")
    if not isinstance(marker, dict) or not isinstance(held, dict):
        return None
    source_id = marker.get("old_id")
    return next((p for p in candidates if p.id == source_id and p.id != used.id), None)


def finish_cutover(ctx: Rotation, old: Postgres, new: Postgres) -> None:
    """Continue the rotation of `old` into `new`, which every target already uses. The
    dead run verified the copy before its repoint; it must still hold exactly what `old`
    holds, proven by content now (read-only, before anything changes), or nothing is done:
    `new` may hold writes `old` lacks. Then the copy counts as done; the phases take a
    backup of `old`, verify `new` against it, deploy, thaw and retire `old` (the guard's
    rules: proven copy, backup on disk, drift check)."""
    settings = ctx.settings

    def fingerprint_of(pg: Postgres, like: Fingerprint | None = None) -> Fingerprint:
        return take_fingerprint(
            require_tls(ctx.connection_info(pg.id).external_connection_string),
            jobs=settings.jobs,
            mode=settings.verify,
            like=like,
            connect_timeout=settings.connect_timeout,
            statement_timeout=settings.command_timeout,
        )

    source = fingerprint_of(old)
    result = compare(source, fingerprint_of(new, like=source))
    if not result.equal:
        raise RotationError(
            f"every target uses {new.id} ({new.name}), the new database of a rotation of "
            f"{old.id} ({old.name}) that died after pointing the targets at it, but the two "
            f"no longer hold the same data ({'; '.join(result.differences[:3])}); nothing "
            "was changed",
            hint=f"check which one holds the data you want: if {new.id}, thaw and redeploy "
            f"the services and delete {old.id} yourself; if {old.id}, point the targets back "
            "at it; then run `render-rotator rotate` again",
        )
    ctx.state.copy = CopySummary(method="done by the interrupted run (verified again)")
    reason = f"every target already uses {new.id}, which holds exactly what {old.id} holds"
    ask(ctx.state, AlreadyDone(("copy",), reason), "inspect")
    log.warning(
        "every target uses %s (%s), made by an interrupted rotation of %s that did not deploy "
        "it: finishing that rotation",
        new.id,
        new.name,
        old.id,
    )


# -- finding the backup -----------------------------------------------------------------


def _manifests(where: Path) -> list[Path]:
    """Manifest files at `where`: the file itself, the manifest next to an archive, or every
    ``*.json`` under a directory (an Actions artifact may unpack into a subdirectory)."""
    if where.is_file() and where.suffix == ".json":
        return [where]
    beside = where.with_name(where.name + ".json")
    if beside.is_file():
        return [beside]
    if where.is_dir() and not (where / "toc.dat").exists():
        return sorted(p for p in where.rglob("*.json") if p.is_file())
    return []


def _load(path: Path) -> Backup | None:
    """A backup manifest, or None for any other JSON file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("archive"), dict):
        return None
    if not {"postgres_id", "database"} <= data.keys():
        return None
    if not data["archive"].get("sha256") or not data["archive"].get("inventory"):
        return None
    archive = path.with_name(path.name.removesuffix(".json"))
    if not archive.exists() and data["archive"].get("path"):
        recorded = Path(str(data["archive"]["path"]))
        archive = recorded if recorded.exists() else archive
    return Backup(manifest_path=path, archive=archive, manifest=data)


def _why_not(ctx: Rotation, backup: Backup, dead: list[TargetValue], ids: set[str]) -> str | None:
    """Why `backup` is not the backup of this entry's lost database (None when it is)."""
    db = ctx.db
    if backup.postgres_id in ids:
        return f"its database {backup.postgres_id} still exists on Render"
    if db.id and backup.postgres_id != db.id:
        return f"it is a backup of {backup.postgres_id}, not {db.id}"
    if db.name and not is_rotation_of(db.name, backup.database, db.new_name):
        return f"it is a backup of {backup.database!r}, not {db.name!r} (or a rotation of it)"
    recorded = backup.manifest.get("targets")
    for value in dead:
        if isinstance(recorded, dict):
            entry = recorded.get(value.label) or {}
            if entry.get("old_sha256") != fingerprint(value.value):
                return f"target {value.label} did not hold that database's URL when it was taken"
            continue
        # a manifest from before target fingerprints: the URL's database and user must match
        mine = endpoint(value.value)
        source = endpoint(str(backup.manifest["archive"].get("source") or ""))
        if mine is None or source is None:
            return f"target {value.label} does not name its database and user"
        if (mine.dbname, mine.user) != (source.dbname, source.user):
            return f"target {value.label} does not name its database and user"
    return None


def find_backup(ctx: Rotation, dead: list[TargetValue], on_render: list[Postgres]) -> Backup | None:
    """The newest backup of the lost database (the one taken under the last freeze), its
    archive checked against the manifest's sha256; None when there is none."""
    hint = ctx.backup_hint
    where = hint if hint is not None else ctx.settings.backup_dir
    if hint is not None and not hint.exists():
        raise UsageError(f"--backup {hint} does not exist", hint="give the path of the backup")
    ids = {p.id for p in on_render}
    found = [b for b in (_load(p) for p in _manifests(where)) if b is not None]
    matching = [b for b in found if _why_not(ctx, b, dead, ids) is None]
    if hint is not None and not matching:
        reasons = [f"{b.manifest_path.name}: {_why_not(ctx, b, dead, ids)}" for b in found]
        raise UsageError(
            f"--backup {hint} is not a backup of the lost database of {ctx.db.label}"
            + (f" ({'; '.join(reasons)})" if reasons else ": no backup manifest (*.json) there"),
            hint="give the backup archive (with its .json manifest beside it) or the manifest",
        )
    if not matching:
        return None
    lost_ids = sorted({b.postgres_id for b in matching})
    if len(lost_ids) > 1:
        raise UsageError(
            f"backups of {len(lost_ids)} deleted databases of {ctx.db.label} match "
            f"({', '.join(lost_ids)}) in {where}",
            hint="pass --backup PATH with the one to finish from",
        )
    backup = max(matching, key=lambda b: str(b.manifest.get("created_at")))
    if not backup.archive.exists():
        raise RotationError(
            f"the backup manifest {backup.manifest_path} was found but not its archive "
            f"{backup.archive.name}",
            hint=f"put the archive next to its manifest in {backup.manifest_path.parent}",
        )
    if sha256_path(backup.archive) != backup.sha256:
        raise RotationError(
            f"the backup {backup.archive} does not match its manifest's sha256 (damaged or "
            "incomplete); nothing was changed",
            hint="download the backup artifact again (the archive and its .json manifest)",
        )
    return backup


def _no_backup_error(
    ctx: Rotation, dead: list[TargetValue], on_render: list[Postgres]
) -> RotationError:
    """What exists, what is missing, and what to do, in one message."""
    owner = ctx.config.render.owner_id or "your workspace"
    listed = ", ".join(f"{p.id} ({p.name}, {p.status_raw or p.status})" for p in on_render)
    shown = []
    for value in dead:
        ep = endpoint(value.value)
        where = f"{ep.user}@{ep.host}:{ep.port}/{ep.dbname}" if ep else "an unparsable value"
        shown.append(f"{value.label} -> {where}")
    searched = ctx.backup_hint if ctx.backup_hint is not None else ctx.settings.backup_dir
    return RotationError(
        f"the database of {ctx.db.label} is gone from Render: target(s) "
        f"{'; '.join(shown)} point at a database that no longer exists; Render databases of "
        f"{owner}: {listed or 'none'}; no backup of it in {Path(searched).resolve()} "
        "(an interrupted delete-first rotation deletes it only after a verified backup); "
        "nothing was changed",
        hint="download the backup artifact of the interrupted run (the archive and its .json "
        "manifest) into backup_dir, or pass --backup PATH, and run again; without that backup "
        "the old database's data cannot be recovered",
    )


def relocate_backup(ctx: Rotation) -> None:
    """`resume --backup PATH`: the journal's backup is no longer where it was written (moved,
    or downloaded elsewhere); use the one at PATH if it is the very same archive."""
    entry = ctx.state.backup
    hint = ctx.backup_hint
    if entry and Path(entry.path).exists():
        _require_verified_archive(ctx, entry)
        return
    if not entry:
        return
    if hint is None:
        _require_backup_before_resuming(ctx, entry)
        return
    if not hint.exists():
        raise UsageError(f"--backup {hint} does not exist", hint="give the path of the backup")
    same = [
        b
        for b in (_load(p) for p in _manifests(hint))
        if b is not None and b.sha256 == entry.sha256
    ]
    if not same:
        raise UsageError(
            f"--backup {hint} is not the backup this rotation took "
            f"({Path(entry.path).name}, sha256 {entry.sha256[:12]}...)",
            hint="give that archive (with its .json manifest beside it) or its manifest",
        )
    backup = same[0]
    if not backup.archive.exists() or sha256_path(backup.archive) != entry.sha256:
        raise RotationError(
            f"the backup {backup.archive} does not match its manifest's sha256 (damaged or "
            "incomplete); nothing was changed",
            hint="download the backup artifact again (the archive and its .json manifest)",
        )
    log.info("using the backup at %s (moved from %s)", backup.archive, entry.path)
    entry.path = str(backup.archive.resolve())
    entry.manifest = str(backup.manifest_path.resolve())
    ctx.save()


def _require_verified_archive(ctx: Rotation, entry: BackupFacts) -> None:
    """The old database is (or may be) deleted and the new one still has to be filled from
    the backup: the archive on disk must be the one that was verified (not damaged, not
    another file put in its place), or nothing is provisioned from it."""
    deleting = ctx.state.old_deleted or ctx.journal.status_of("delete-old")
    if not deleting or ctx.journal.is_done("verify"):
        return
    if sha256_path(Path(entry.path)) != entry.sha256:
        raise RotationError(
            f"the backup {entry.path} does not hash as the verified backup of the deleted "
            f"database {ctx.state.old_id} (sha256 {entry.sha256[:12]}...); nothing was changed",
            hint="put the verified archive back there, or run `render-rotator resume --backup "
            "PATH` with it (its .json manifest beside it)",
        )


def _require_backup_before_resuming(ctx: Rotation, entry: BackupFacts) -> None:
    """The old database is (or may be) deleted and its backup is not where the journal says,
    while the new database still has to be filled from it: stop before any phase provisions
    a database that could not be filled."""
    journal = ctx.journal
    deleting = ctx.state.old_deleted or journal.status_of("delete-old")
    if not deleting or journal.is_done("verify"):
        return
    raise RotationError(
        f"the old database {ctx.state.old_id} was deleted after a verified backup, and "
        f"that backup is no longer at {entry.path}; nothing was changed",
        hint="put it back there, or run `render-rotator resume --backup PATH` with the archive "
        "(its .json manifest beside it), e.g. the downloaded Actions artifact",
    )


# -- taking over ------------------------------------------------------------------------


def spec_of(backup: Backup) -> DatabaseSpec:
    """The lost database's spec: recorded in the manifest, or (older manifests) read from
    its source URL and inventory."""
    spec = backup.manifest.get("spec")
    if isinstance(spec, dict) and spec.get("plan") and spec.get("region"):
        known = {f.name for f in dataclasses.fields(DatabaseSpec)}
        return DatabaseSpec(**{k: v for k, v in spec.items() if k in known})
    source = endpoint(str(backup.manifest["archive"].get("source") or ""))
    host = source.host if source else ""
    # Render's external host: dpg-xxx-a.<region>-postgres.render.com
    labels = host.split(".")
    region = (
        labels[1].removesuffix("-postgres")
        if len(labels) == 4 and host.endswith("-postgres.render.com")
        else None
    )
    version = int(backup.inventory.get("server_version") or 0) // 10000
    if not (source and region and version):
        raise RotationError(
            f"the backup manifest {backup.manifest_path} does not say how to recreate "
            f"{backup.database} (plan, region, version)",
            hint=f'restore it by hand: `render-rotator restore "$NEW_DATABASE_URL" '
            f"{backup.archive}`, then point the targets at that database",
        )
    return DatabaseSpec(
        name=backup.database,
        plan="free",  # manifests without a spec come from the free tier's delete-first
        version=str(version),
        region=region,
        database_name=source.dbname,
        database_user=source.user,
    )


def _own_new(ctx: Rotation, lost: Lost, spec: DatabaseSpec, owner: str) -> Postgres | None:
    """The new database the interrupted run created, if it got that far: named as this
    config names a replacement of the lost database on a day from the backup's to today's,
    in the same owner, plan, region and version, created after the backup. Anything else is
    not ours and is never adopted (or emptied)."""
    backup = lost.backup
    taken = backup.created_at
    today = ctx.today or date.today()
    first = taken.date() if taken else today
    names = {
        naming.new_name(ctx.db.new_name, backup.database, first + timedelta(days=n))
        for n in range(max(0, (today - first).days) + 1)
    }
    version = ctx.db.version or spec.version
    ours = [
        p
        for p in lost.on_render
        if p.name in names
        and p.id != backup.postgres_id
        and p.owner_id == owner
        and (p.plan, p.region, p.version) == (spec.plan, spec.region, version)
        and (taken is None or (p.created_at is not None and p.created_at >= taken - _CLOCK_SLACK))
        and guard.marked_for(ctx, p) == backup.postgres_id  # the marker its rotation wrote
    ]
    if len(ours) > 1:
        raise UsageError(
            f"{len(ours)} databases could be the new database of the interrupted rotation "
            f"of {ctx.db.label}: {', '.join(f'{p.id} ({p.name})' for p in ours)}",
            hint="delete the one(s) you know are not in use, or finish by hand with "
            "`render-rotator restore`",
        )
    return ours[0] if ours else None


def _owner(ctx: Rotation, backup: Backup) -> str:
    owner = ctx.config.render.owner_id or backup.manifest.get("owner_id")
    if not owner:
        raise UsageError(
            f"the backup manifest {backup.manifest_path} does not name the workspace",
            hint="set owner_id under [render] in the config",
        )
    return str(owner)


def take_over(ctx: Rotation, lost: Lost) -> tuple[Postgres | None, list[TargetValue]]:
    """Fill the fresh journal from the backup (nothing on Render changes here): the old
    database as deleted after this verified backup, the new database the interrupted run
    created (if any), the services it froze. Returns (new database or None, target values)."""
    state, backup = ctx.state, lost.backup
    # the run that deleted the old database may be alive, between the deletion and the
    # new database's marker: its lease is beside the backup (rotation/lease.py)
    lease_mod.check_file_free(lease_mod.file_for(backup.archive), database=ctx.db.label)
    spec = spec_of(backup)
    owner = _owner(ctx, backup)
    new = _own_new(ctx, lost, spec, owner)
    state.old_id, state.old_name, state.owner_id = backup.postgres_id, backup.database, owner
    state.requested_strategy, state.strategy = ctx.settings.strategy, "delete-first"
    state.old_deleted = True
    state.old_spec = spec
    state.backup = BackupFacts(
        path=str(backup.archive.resolve()),
        manifest=str(backup.manifest_path.resolve()),
        sha256=backup.sha256,
        size_bytes=backup.manifest["archive"].get("size_bytes"),
        format=backup.manifest["archive"].get("format"),
    )
    state.inventory = backup.inventory
    state.fingerprint = _fingerprint_of(backup)
    state.recovered = Recovered(
        backup=str(backup.archive.resolve()), new_id=new.id if new else None
    )
    recorded = backup.manifest.get("targets") or {}
    for value in lost.dead:
        kind = (recorded.get(value.label) or {}).get("old_kind") or value.target.connection
        state.targets[value.label] = TargetState(
            repointed=False, old_kind=kind, old_sha256=fingerprint(value.value)
        )
    if not _lease_names_frozen(ctx, backup, new):
        _adopt_frozen(ctx)  # else the lease names them: taken with it (rotation/lease.py)
    held = (
        f"{len(lost.dead)} target(s) still hold its URL"
        if lost.dead
        else "every target already uses its replacement, whose services are still frozen"
    )
    message = (
        f"{backup.postgres_id} ({backup.database}) is gone from Render and {held}: an "
        f"interrupted delete-first rotation; finishing it from the backup {backup.archive} "
        f"(taken {backup.manifest.get('created_at')}, sha256 checked)"
    )
    if new is not None:
        used = [v.label for v in lost.values if points_at(v.value, ctx.connection_info(new.id))]
        message += f" into {new.id} ({new.name}), which that rotation had created"
        state.new_id, state.new_name = new.id, new.name
        if used:
            _keep_used_new(ctx, new, used)
        else:
            state.new_adopted = True  # emptied before the restore
        ctx.set_new(new)
    log.warning("%s", message)
    ctx.report.notes.append(message)
    return new, lost.values


def _fingerprint_of(backup: Backup) -> dict[str, Any] | None:
    """The content fingerprint the backup's manifest holds (taken in the dump's snapshot), as
    the journal keeps it (definitions and settings as digests); none in an older manifest."""
    stored = (backup.manifest.get("archive") or {}).get("fingerprint")
    if not stored:
        return None
    return Fingerprint.from_dict(stored).to_dict(digests=True)


def _keep_used_new(ctx: Rotation, new: Postgres, used: list[str]) -> None:
    """Some targets already use the new database (the repoint was cut short): it was
    verified before that, and is never emptied. It must still hold exactly the backup's
    data; then the copy is done and the remaining targets are repointed."""
    source = Inventory.from_dict(ctx.state.known_inventory)
    current = take_inventory(
        require_tls(ctx.connection_info(new.id).external_connection_string),
        connect_timeout=ctx.settings.connect_timeout,
        statement_timeout=ctx.settings.command_timeout,
    )
    result = compare_inventories(source, current)
    if not result.equal:
        raise RotationError(
            f"{', '.join(used)} already use {new.id} ({new.name}), which does not hold "
            f"exactly the backup's data ({'; '.join(result.differences[:3])}); nothing was "
            "changed",
            hint="it may hold newer writes: point the remaining targets at it by hand if it "
            "is right, or restore the backup into a new database",
        )
    ctx.state.copy = CopySummary(method="done by the interrupted run (verified again)")
    reason = f"{', '.join(used)} already use {new.id}, which holds exactly the backup's data"
    ask(ctx.state, AlreadyDone(("copy",), reason), "inspect")


def _lease_names_frozen(ctx: Rotation, backup: Backup, new: Postgres | None) -> bool:
    """Whether the dead run's lease (beside the backup until the new database carried it,
    then on that database) says which services it froze: then exactly those are thawed, as
    the run taking the lease over adopts them (write_freeze.adopt_from_dead_run). A lease
    written before leases named them says nothing either way."""
    records = [lease_mod.read_file(lease_mod.file_for(backup.archive))]
    if new is not None and new.status_raw == "available":
        url = require_tls(ctx.connection_info(new.id).external_connection_string)
        try:
            stamp = read_stamp(url, connect_timeout=ctx.settings.connect_timeout)
            records.append(stamp.get("lease"))
        except RenderRotatorError as exc:
            log.info("could not read the lease on %s: %s", new.id, exc)
    return any(isinstance(r, dict) and isinstance(r.get("frozen"), dict) for r in records)


def _adopt_frozen(ctx: Rotation) -> None:
    """The services the interrupted run froze count as frozen by this rotation, so its
    deploy thaws them: with the old database gone they cannot work as they are anyway.
    Each is recorded under what the freeze does to its type (rotation/services.py)."""
    mode = ctx.settings.freeze
    frozen = FrozenServices(mode=mode)
    types = service_types(ctx)
    for service_id in ctx.affected_services():
        action = freeze_action(types.get(service_id, WEB_SERVICE), mode)
        if action is None:
            continue
        service = ctx.client.get_service(service_id)
        if service.suspended if action == "suspend" else service.maintenance_mode_enabled:
            (frozen.suspended if action == "suspend" else frozen.maintenance).append(service_id)
    ctx.state.frozen = frozen
    ctx.state.adopt_frozen = True
