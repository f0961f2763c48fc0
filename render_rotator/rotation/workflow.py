"""rotate() and resume(): run the phases in order, journaled, and land safely on failure.

On any failure before the cutover, the old database stays in use: frozen services are
thawed against it, no env var stays changed and the unused new database is deleted. A
verification mismatch exits 3. Once the old database is gone (delete-first), nothing is
undone: the journal stays open so `resume` can finish from the verified backup, and the
report says exactly how to restore that backup by hand. After the cutover (every deploy
live) nothing is undone either: `resume` finishes retiring the old database.

The journal is written to disk only once a rotation really starts: the read-only inspect
that decides whether anything is due, a refused confirmation and a dry run leave nothing
behind, so a daily `rotate --if-expiring-within` stays a true no-op. One lock file per
database in the state directory keeps two runs (say, an overlapping cron job) apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from render_rotator import faults, stopping
from render_rotator.config import Config, DatabaseConfig, load_config
from render_rotator.errors import (
    DriftError,
    RenderRotatorError,
    RotationError,
    UsageError,
    VerificationError,
)
from render_rotator.postgres.side_by_side import SideFailed
from render_rotator.render import DEPLOY_SUCCESSFUL, RenderClient
from render_rotator.rotation import decisions, guard, naming, phases, recovery, sealing
from render_rotator.rotation import lease as lease_mod
from render_rotator.rotation import rescue as rescuing
from render_rotator.rotation import write_freeze as freezing
from render_rotator.rotation.announce import announce
from render_rotator.rotation.context import Rotation
from render_rotator.rotation.journal import Journal, now_iso
from render_rotator.rotation.observer import LogUI, RotationUI
from render_rotator.rotation.report import RotationReport, RotationResult, phase_rows
from render_rotator.rotation.services import describe_freeze, runtime_services
from render_rotator.rotation.state import FrozenServices
from render_rotator.secrets import scrub

log = logging.getLogger("render_rotator.rotation")

ConfirmFn = Callable[[str], bool]
#: ``--if-expiring-within``: days, "config" (each database's rotate_within_days) or None.
ExpiryThreshold = int | str | None

# Phases before which a failure lands back on the old database (when it still exists).
_BEFORE_CUTOVER = frozenset(
    {
        "upgrade",
        "freeze",
        "backup",
        "delete-old",
        "provision",
        "copy",
        "verify",
        "repoint",
        "deploy",
    }
)


def _config(config: Config | str | Path | None) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def _databases(cfg: Config, database: str | None) -> list[DatabaseConfig]:
    return [cfg.find_database(database)] if database else list(cfg.databases)


def _state_dir(db: DatabaseConfig) -> Path:
    return Path(db.settings.state_dir)


def tty_confirm(question: str) -> bool:
    """Ask on the terminal; False when there is none to ask on."""
    if not sys.stdin.isatty():
        return False
    import click

    return click.confirm(question, default=False, err=True)


@contextlib.contextmanager
def _locked(db: DatabaseConfig) -> Iterator[None]:
    """Hold this database's lock file for the whole run; refuse if another run holds it.

    An flock dies with its process, so a killed run never leaves a stale lock.
    """
    path = Journal.path_for(_state_dir(db), db.label).with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot use the state directory {path.parent}: {exc.strerror}",
            hint="set state_dir in the config to a writable directory",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UsageError(
                f"another render-rotator run is working on {db.label} right now (lock {path})",
                hint="wait for it to finish; a killed run releases the lock by itself",
            ) from None
        yield
    finally:
        os.close(fd)


def _unfinished(db: DatabaseConfig, *, set_aside_unreadable: bool = False) -> Journal | None:
    """The unfinished journal of `db`, if any. One this version cannot read raises its
    one-line error, unless `set_aside_unreadable` (``rotate --restart``): then it is renamed
    aside, kept for the record, and the rotation starts over from what exists on Render."""
    try:
        journal = Journal.find(_state_dir(db), db.label)
    except RotationError as exc:
        if not set_aside_unreadable:
            raise
        path = Journal.path_for(_state_dir(db), db.label)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name.removesuffix('.json')}.unreadable.{stamp}.json")
        os.replace(path, aside)
        log.warning(
            "set the journal %s aside (%s) as %s (--restart): what it froze is not thawed "
            "from it; the new run re-discovers what exists on Render",
            path,
            exc.message,
            aside,
        )
        return None
    return journal if journal is not None and journal.unfinished else None


def _refuse_unfinished(db: DatabaseConfig, journal: Journal) -> None:
    raise UsageError(
        f"an unfinished rotation of {db.label} exists ({journal.describe()}; journal "
        f"{journal.path})",
        hint="run `render-rotator resume` to finish it, or `rotate --restart` to start over "
        "(what exists on Render is re-discovered)",
    )


def rotate(
    config: Config | str | Path | None = None,
    database: str | None = None,
    *,
    dry_run: bool = False,
    if_expiring_within: ExpiryThreshold = None,
    yes: bool = False,
    restart: bool = False,
    client: RenderClient | None = None,
    ui: RotationUI | None = None,
    confirm: ConfirmFn | None = tty_confirm,
    pg_bin: str | None = None,
    today: date | None = None,
    backup: Path | None = None,
    rescue: bool = False,
) -> RotationResult:
    """Rotate each configured database (or just `database`) that is due.

    `if_expiring_within`: rotate only a database expiring within that many days (``"config"``:
    each database's ``rotate_within_days``); the others get a "not due" report (exit 0).
    `backup`: the backup to finish from when an interrupted delete-first rotation deleted
    the old database and its journal is lost (default: search `backup_dir`).
    `rescue`: an expired free database is upgraded to the cheapest paid plan to regain
    access, rotated into a new free one, then deleted (costs cents, so only on request).
    """
    cfg = _config(config)
    dbs = _databases(cfg, database)
    if not dry_run and not restart:
        for db in dbs:  # refuse before touching anything, not half-way through the list
            journal = _unfinished(db)
            if journal is not None:
                _refuse_unfinished(db, journal)
    own_client = client is None
    api = client or RenderClient()
    reports = []
    try:
        if not dry_run and len(dbs) > 1:
            _preflight(cfg, dbs, api, pg_bin=pg_bin, today=today, restart=restart)
        for db in dbs:
            lock = contextlib.nullcontext() if dry_run else _locked(db)
            with lock:
                if not dry_run:
                    journal = _unfinished(db, set_aside_unreadable=restart)
                    if journal is not None and not restart:
                        _refuse_unfinished(db, journal)
                    if journal is not None:
                        log.warning(
                            "discarding the unfinished journal %s (--restart)", journal.path
                        )
                        _thaw_discarded(cfg, db, api, journal)
                        journal.close("discarded", "discarded by rotate --restart")
                        journal.archive()
                reports.append(
                    _run(
                        cfg,
                        db,
                        api,
                        journal=None,
                        dry_run=dry_run,
                        if_expiring_within=if_expiring_within,
                        yes=yes,
                        ui=ui or LogUI(),
                        confirm=confirm,
                        pg_bin=pg_bin,
                        today=today,
                        backup=backup,
                        rescue=rescue,
                    )
                )
    finally:
        if own_client:
            api.close()
    result = RotationResult(reports)
    announce(cfg, result)
    return result


def resume(
    config: Config | str | Path | None = None,
    database: str | None = None,
    *,
    client: RenderClient | None = None,
    ui: RotationUI | None = None,
    pg_bin: str | None = None,
    yes: bool = True,
    today: date | None = None,
    backup: Path | None = None,
) -> RotationResult:
    """Continue every unfinished rotation from its journal's last completed phase.

    A database without a journal (say, on a fresh machine) is looked up on Render: a
    half-done rotation found there (a newer rotation of it that not every target uses yet,
    or an old database deleted by delete-first whose backup is in `backup_dir` or at
    `backup`) is finished; otherwise there is nothing to resume.
    """
    cfg = _config(config)
    own_client = client is None
    api = client or RenderClient()
    reports = []
    try:
        for db in _databases(cfg, database):
            with _locked(db):
                journal = _unfinished(db)
                reports.append(
                    _run(
                        cfg,
                        db,
                        api,
                        journal=journal,
                        discover_only=journal is None,
                        ui=ui or LogUI(),
                        pg_bin=pg_bin,
                        yes=yes,
                        today=today,
                        backup=backup,
                    )
                )
    finally:
        if own_client:
            api.close()
    result = RotationResult(reports)
    announce(cfg, result)
    return result


def _preflight(
    cfg: Config,
    dbs: list[DatabaseConfig],
    client: RenderClient,
    *,
    pg_bin: str | None,
    today: date | None,
    restart: bool = False,
) -> None:
    """Inspect every database (read-only, nothing written) before the first is rotated, so
    a problem with the second one (unknown name, wrong target, a downgrade) stops the run
    before any change rather than after the first rotation.

    With `restart`, a journal this version cannot read is treated like any unfinished one:
    it is set aside (by the loop that rotates, like the single-database path) and its
    inspect runs afresh there; nothing is moved here."""
    for db in dbs:
        try:
            journal = _unfinished(db)
        except RotationError:
            if not restart:
                raise
            continue
        if journal is not None:
            continue  # --restart: its inspect runs afresh below
        path = Journal.path_for(_state_dir(db), db.label)
        ctx = Rotation(
            config=cfg,
            db=db,
            client=client,
            journal=Journal(path=path, database=db.label, persist=False),
            report=RotationReport(database=db.label),
            pg_bin=pg_bin,
            today=today,
        )
        phases.inspect(ctx)


def _thaw_discarded(
    cfg: Config, db: DatabaseConfig, client: RenderClient, journal: Journal
) -> None:
    """Before starting over, undo the freeze of the rotation being discarded: the services
    it froze are ours, and the new run freezes afresh (else they would look frozen by
    someone else and stay so). Once a cutover or a deletion began, they are left as they
    are."""
    state = journal.state
    ctx = Rotation(
        config=cfg,
        db=db,
        client=client,
        journal=journal,
        report=RotationReport(database=db.label),
    )
    try:
        sealing.lift_left_seal(ctx)  # killed while the old database was sealed
    except RenderRotatorError as exc:
        raise RotationError(
            f"could not lift the seal the discarded rotation of {db.label} left on "
            f"{state.old_id}: {scrub(str(exc))}",
            hint="nothing was started; try `rotate --restart` again",
        ) from None
    frozen = state.frozen
    if frozen is None or state.any_repointed:
        return
    deleting = [journal.status_of(p) for p in ("delete-old", "retire")]
    if state.old_deleted or any(s not in (None, "skipped") for s in deleting):
        return  # the old database may be gone: thawed services would only fail against it
    try:
        freezing.thaw(ctx)
    except RenderRotatorError as exc:
        raise RotationError(
            f"could not thaw what the discarded rotation of {db.label} froze: {scrub(str(exc))}",
            hint="nothing was started; try `rotate --restart` again once Render answers",
        ) from None
    thawed = frozen.thawed
    if thawed:
        log.info("thawed %s, frozen by the discarded rotation", ", ".join(thawed))


def _run(
    cfg: Config,
    db: DatabaseConfig,
    client: RenderClient,
    *,
    journal: Journal | None,
    discover_only: bool = False,
    dry_run: bool = False,
    if_expiring_within: ExpiryThreshold = None,
    yes: bool = False,
    ui: RotationUI,
    confirm: ConfirmFn | None = None,
    pg_bin: str | None = None,
    today: date | None = None,
    backup: Path | None = None,
    rescue: bool = False,
) -> RotationReport:
    resuming = journal is not None
    if journal is None:
        # in memory until the rotation really starts (see the module docstring)
        path = Journal.path_for(_state_dir(db), db.label)
        journal = Journal(path=path, database=db.label, persist=False)
    report = RotationReport(database=db.label, dry_run=dry_run)
    ctx = Rotation(
        config=cfg,
        db=db,
        client=client,
        journal=journal,
        report=report,
        ui=ui,
        yes=yes,
        confirm=confirm,
        pg_bin=pg_bin,
        today=today,
        backup_hint=backup,
        rescue=rescue,
    )
    if dry_run:
        return _dry_run(ctx, if_expiring_within)
    try:
        return _rotate(ctx, resuming, discover_only, if_expiring_within)
    finally:
        if ctx.lease is not None:
            ctx.lease.release()


def _rotate(
    ctx: Rotation, resuming: bool, discover_only: bool, if_expiring_within: ExpiryThreshold
) -> RotationReport:
    """Inspect, take the lease, then run the phases (see `_run`)."""
    report, journal = ctx.report, ctx.journal
    if not resuming:
        # read-only: a failure here (bad target, unknown database, 401) changed nothing and
        # is raised as is, one clear error
        _run_phase(ctx, "inspect", phases.inspect)
        left_frozen = _left_frozen(ctx)
        if discover_only and not (ctx.state.new_id or ctx.state.recovered or left_frozen):
            report.due = None  # not asked: resume finishes rotations, it does not judge expiry
            report.rotated = False
            report.message = "nothing to resume: no unfinished rotation (journal or on Render)"
            return report
        if not left_frozen and not _due(ctx, if_expiring_within):
            return report
        _peek_lease(ctx)  # a run in progress is named before anything else is said
        guard.check_new_name(ctx, ctx.today or date.today())
        _confirm_destruction(ctx)
        _take_lease(ctx)
        journal.persist = True
        journal.save()
    if resuming:
        recovery.relocate_backup(ctx)  # before any phase: a missing backup changes nothing
    current = "inspect"
    try:
        _apply_decisions(ctx)  # resuming: one recorded but not acted on when the run died
        at, gave_way = 0, 0
        ran: set[str] = set()
        # the order is read again at each step: create-first provisions before the freeze,
        # and auto's fallback to delete-first (decided there) moves provision after delete-old
        while at < len(order := phases.phase_order(ctx.state)):
            name, phase = order[at]
            at += 1
            if name == "inspect" and not resuming:
                continue  # ran above
            if name != "inspect" and _skip(journal, name, ran):
                continue  # resuming: inspect always runs again, to re-read Render
            current = name
            ran.add(name)
            together = phases.beside(ctx, name)
            if together is not None:
                ran.add(together)
            try:
                gave_way_now = _run_phase(ctx, name, phase, together)
            except SideFailed as failed:
                current = failed.name  # the side that failed (backup or copy) says why
                raise failed.error from None
            if gave_way_now:
                # it gave way to a decision: run what the decision put before it, then it
                gave_way += 1
                if gave_way > len(phases.PHASES):
                    raise RotationError(f"phase {name} keeps giving way; stopping")
                at = _first_undone(ctx, ran)
                continue
            if name == "inspect":
                _take_lease(ctx)  # resuming: before the first change
                sealing.lift_left_seal(ctx)  # a killed run's seal: the app needs its slots
    except VerificationError as exc:
        _on_failure(ctx, current, exc, status="mismatch", resuming=resuming)
        report.exit_code = 3
        return report
    except Exception as exc:  # noqa: BLE001 - ours, or a full disk, a bug...: land safely
        error = faults.as_error(exc)
        _on_failure(ctx, current, error, status="failed", resuming=resuming)
        report.exit_code = error.exit_code
        return report
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM (a cancelled CI job): land like any failure, so an app frozen
        # for a copy that will not finish runs again; a second Ctrl-C leaves the journal
        # open for `resume`, and says where things stand
        try:
            _on_failure(
                ctx,
                current,
                RotationError("interrupted", hint="run `render-rotator rotate` again when ready"),
                status="interrupted",
                resuming=resuming,
            )
        except KeyboardInterrupt as again:
            raise RotationInterrupted(
                f"{stopping.describe(again)} while landing after an interruption in phase "
                f"{current}. " + interrupted_state(ctx)
            ) from None
        if journal.unfinished:  # could not land (the old database is gone): say what is left
            report.message = report.message.rstrip(". ") + ". " + interrupted_state(ctx)
        report.exit_code = 1
        return report
    except BaseException as exc:
        # a crash: the journal stays open, ready for `resume`
        with contextlib.suppress(Exception):
            journal.error = scrub(f"{type(exc).__name__}: {exc}")
            journal.save()
        raise
    _finish(ctx)
    return report


def _skip(journal: Journal, name: str, ran: set[str]) -> bool:
    """Whether the runner passes over a phase: done, and not one to run again (the freeze
    of a resumed run, once)."""
    return journal.is_done(name) and not (_rerun(journal, name) and name not in ran)


def _first_undone(ctx: Rotation, ran: set[str]) -> int:
    """Index, in the order as it stands now, of the first phase after inspect still to run:
    after auto's fallback, the freeze, the backup and delete-old come before provision."""
    order = phases.phase_order(ctx.state)
    for index, (name, _phase) in enumerate(order):
        if name != "inspect" and not _skip(ctx.journal, name, ran):
            return index
    return len(order)


def _rerun(journal: Journal, name: str) -> bool:
    """Whether a resumed rotation runs a completed phase again: the freeze, until the
    cutover, since services may have been thawed by a landing the journal could not record
    (a full disk); re-freezing checks each service and changes only what is not frozen."""
    return name == "freeze" and not journal.is_done("repoint")


def _lease_homes(ctx: Rotation) -> list[tuple[str, str]]:
    """The databases that carry the lease now: the old one and an available new one."""
    homes = []
    # an expired database cannot be read before its rescue upgrade: the upgrade takes it
    unreadable = ctx.state.rescue and not ctx.journal.is_done("upgrade")
    if ctx.old is not None and not unreadable:
        homes.append((ctx.state.known_old_id, ctx.old_url()))
    new = ctx.new if ctx.state.new_id else None
    if new is not None and new.status_raw == "available":
        homes.append((new.id, ctx.new_url()))
    return homes


def _left_frozen(ctx: Rotation) -> list[str]:
    """Services a dead run of this rotation froze and left frozen, as its lease on the
    databases says and as they are now (read-only): its rotation is unfinished, so it is
    always due. Services someone has thawed since do not count."""
    named: dict[str, str] = {}
    for postgres_id, url in _lease_homes(ctx):
        try:
            left = lease_mod.left_frozen(url, connect_timeout=ctx.settings.connect_timeout)
        except RenderRotatorError as exc:
            log.info("could not read the lease on %s: %s", postgres_id, exc)
            continue
        for service_id, action in left.items():
            named.setdefault(service_id, action)
    found = freezing.still_frozen(ctx, named)
    if found:
        log.warning(
            "an interrupted rotation of %s left %s frozen: finishing it",
            ctx.db.label,
            ", ".join(found),
        )
    return found


def _peek_lease(ctx: Rotation) -> None:
    """Refuse at once (read-only) when another run holds the lease."""
    for _postgres_id, url in _lease_homes(ctx):
        lease_mod.check_free(
            url, database=ctx.db.label, connect_timeout=ctx.settings.connect_timeout
        )


def _take_lease(ctx: Rotation) -> None:
    """Take the lease on every database that can carry it, then re-read the targets: a run
    that finished between our inspection and now has moved them, and we must not act."""
    lease = lease_mod.Lease(
        database=ctx.db.label,
        state_dir=str(_state_dir(ctx.db)),
        ttl=ctx.settings.lease_ttl,
        connect_timeout=ctx.settings.connect_timeout,
    )
    ctx.lease = lease
    for postgres_id, url in _lease_homes(ctx):
        lease.acquire(postgres_id, url)
    if ctx.state.old_deleted and ctx.state.backup is not None:
        # the old database is gone: until the new one carries the marker, the lease is
        # beside the backup (rotation/lease.py)
        lease.acquire_file(lease_mod.file_for(Path(ctx.state.backup.path)))
    try:
        phases.recheck_targets(ctx)
    except UsageError as exc:
        raise UsageError(
            f"{exc.message}; the targets changed while this run was starting (did another "
            "run just rotate it?); nothing was changed",
            hint="check `render-rotator status`, then run again if it is still due",
        ) from None
    # a dead run's lease names what it froze: ours to thaw now (rotation/lease.py), and
    # the seal it left on the old database, lifted now: the backup needs its sessions
    freezing.adopt_from_dead_run(ctx)
    sealing.lift_inherited_seal(ctx)


class RotationInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM/SIGHUP) stopped a rotation; the message says where things stand."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def interrupted_state(ctx: Rotation) -> str:
    """Where a stopped rotation left things, from the journal alone (Render may be the
    reason it was stopped): what is frozen, whether the old database exists, the backup."""
    state, journal = ctx.state, ctx.journal
    if not journal.persist:
        return "Nothing was changed."
    said: list[str] = []
    frozen = state.frozen or FrozenServices(mode="none")
    thawed = set(frozen.thawed)
    suspended = [s for s in frozen.suspended if s not in thawed]
    maintenance = [s for s in frozen.maintenance if s not in thawed]
    if suspended:
        said.append(f"suspended (frozen): {', '.join(suspended)}")
    if maintenance:
        said.append(f"in maintenance mode (frozen): {', '.join(maintenance)}")
    if (frozen.readonly or frozen.fenced) and not frozen.readonly_reset:
        said.append(f"the old database {state.old_id} is read-only")
    if state.sealed is not None:
        said.append(
            f"the old database {state.old_id} is sealed (it takes at most "
            f"{state.sealed.sessions} session(s); `resume` lifts it)"
        )
    if not (suspended or maintenance) and state.frozen is not None:
        said.append("no service is frozen")
    if state.old_deleted:
        said.append(f"the old database {state.old_id} was deleted (after the backup)")
    else:
        said.append(f"the old database {state.old_id} still exists")
    backup = state.backup.path if state.backup else None
    said.append(f"backup: {backup}" if backup else "no backup was taken yet")
    if state.new_id:
        said.append(f"the new database {state.new_id} exists")
    moved = [label for label, t in state.targets.items() if t.repointed]
    if moved:
        said.append(f"repointed to the new database: {', '.join(moved)}")
    return (
        "Now: "
        + "; ".join(said)
        + f". Run `render-rotator resume` to finish the rotation (journal {journal.path})."
    )


def _run_phase(ctx: Rotation, name: str, phase: phases.Phase, together: str | None = None) -> bool:
    """Run one phase and record what became of it; act on any decision it returned.

    `together`: a phase that this one runs beside itself (create-first's copy beside its
    backup, `phases.beside`): journaled as begun, failed and done with it, so a run killed
    while both work shows both interrupted and runs them again.

    Returns True when the phase gave way to a decision (it is not done: the caller runs the
    phases the decision put before it, then this one again)."""
    journal = ctx.journal
    journal.begin(name)
    if together is not None:
        journal.begin(together)
    started = time.monotonic()
    try:
        # one display for both: a GitHub Actions log cannot nest groups
        with ctx.ui.phase(name if together is None else f"{name} + {together}") as shown:
            outcome = phase(ctx)
            taken = decisions.decisions_of(outcome)
            gives_way = [d for d in taken if d.gives_way]
            if shown is not None:
                if gives_way:
                    shown.gave_way = "; ".join(d.reason for d in gives_way)
                elif outcome is False:
                    shown.skipped = True
    except BaseException as exc:
        seconds = time.monotonic() - started
        failed = exc.name if isinstance(exc, SideFailed) else None
        with contextlib.suppress(Exception):
            for each in (together, name):
                if each is not None:
                    why = (
                        scrub(str(exc))
                        if failed in (None, each)
                        else f"stopped: the {failed} beside it failed"
                    )
                    journal.fail(each, seconds, why)
        _show_phases(ctx)
        raise
    seconds = time.monotonic() - started
    if together is not None:  # first: a run killed in between re-runs the backup, not the copy
        journal.finish(together, phases.own_seconds(ctx, together) or seconds)
    for decision in taken:
        ctx.state.decide(decisions.record(decision, name, now_iso()))
    # the decisions are saved with the phase's record, before the runner acts on them
    if gives_way:
        journal.defer(name, seconds)
    else:
        journal.finish(name, seconds, skipped=outcome is False)
    _apply_decisions(ctx)
    _show_phases(ctx)
    return bool(gives_way)


def _show_phases(ctx: Rotation) -> None:
    order = tuple(name for name, _ in phases.phase_order(ctx.state))
    ctx.report.phases = phase_rows(ctx.journal.phases, order)


def _apply_decisions(ctx: Rotation) -> None:
    """Act on every decision recorded and not yet applied (a run killed between recording
    and acting applies it when resumed): switch strategy, mark phases to run again or as
    done. Each is marked applied in the same journal write as its effect."""
    state, journal = ctx.state, ctx.journal
    for decision in state.pending:
        if decision.kind == decisions.FallBackToDeleteFirst.kind:
            # expected on the free tier (the report says so too): not a warning
            log.info("Render allows one free database per workspace: switching to delete-first")
            state.strategy = "delete-first"
            note = "Render refused a second free database: used delete-first"
            if note not in ctx.report.notes:
                ctx.report.notes.append(note)
            journal.redo("delete-old")  # skipped while create-first: it runs now
        elif decision.kind == decisions.RedoPhases.kind:
            journal.redo(*decision.phases)
        elif decision.kind == decisions.AlreadyDone.kind:
            for name in decision.phases:
                journal.record_done(name)
        else:
            raise RotationError(
                f"the journal holds a decision this version does not know: {decision.kind}",
                hint="finish the rotation with the render-rotator version that started it",
            )
        decision.applied = True
        journal.save()


def _days_left(expires_at: str | None) -> float | None:
    if not expires_at:
        return None
    when = datetime.fromisoformat(expires_at)
    return (when - datetime.now(UTC)).total_seconds() / 86400


def _threshold(ctx: Rotation, within: ExpiryThreshold) -> int | None:
    if isinstance(within, str):
        if within != "config":
            raise UsageError(
                f"if_expiring_within must be a number of days or 'config', got {within!r}"
            )
        return ctx.settings.rotate_within_days
    return within


def _due(ctx: Rotation, if_expiring_within: ExpiryThreshold) -> bool:
    """False (and a "not due" report) when the database does not expire soon enough.

    A half-done rotation found on Render is always due: it must be finished.
    """
    within = _threshold(ctx, if_expiring_within)
    report = ctx.report
    days = _days_left(ctx.state.old_spec.expires_at if ctx.state.old_spec else None)
    if within is None or ctx.state.new_id is not None or ctx.state.recovered:
        return True
    if days is not None and days <= within:
        return True
    report.due = False
    report.ok = True
    report.rotated = False
    report.message = (
        f"not due: expires in {days:.1f} days (threshold {within})"
        if days is not None
        else "not due: this database does not expire"
    )
    return False


def _destroys(ctx: Rotation) -> list[str]:
    state = ctx.state
    if state.recovered:
        return []  # the old database is already gone; only what this rotation made is reused
    old = f"{state.old_id} ({state.old_name})"
    rescue = state.rescue
    if rescue:
        upgrade = (
            []
            if rescue.upgraded
            else [f"upgrade {old} to the paid plan {rescue.upgrade_to} (a few cents)"]
        )
        return [*upgrade, f"delete {old} once the new free database is live"]
    if state.strategy == "delete-first" or ctx.settings.strategy == "delete-first":
        return [
            f"delete {old} after a verified backup, BEFORE the new database exists "
            "(free tier: one free database at a time)"
        ]
    steps = []
    if not ctx.settings.keep_old:
        steps.append(f"delete {old} once the new one is live")
    if ctx.settings.strategy == "auto":
        steps.append(
            f"if Render refuses a second free database: delete {old} after a verified "
            "backup, before creating the new one"
        )
    return steps


def _confirm_destruction(ctx: Rotation) -> None:
    steps = _destroys(ctx)
    if not steps or ctx.yes:
        return
    question = f"rotate {ctx.db.label} will " + "; and ".join(steps) + ". Continue?"
    if ctx.confirm is not None and ctx.confirm(question):
        return
    asked = ctx.confirm is not None and sys.stdin.isatty()
    raise UsageError(
        f"not confirmed: rotating {ctx.db.label} deletes a database"
        + ("" if asked else " and there is no terminal to confirm on")
        + "; nothing was changed",
        hint="pass --yes to confirm",
    )


def _dry_run(ctx: Rotation, if_expiring_within: ExpiryThreshold) -> RotationReport:
    """Inspect only (the journal stays in memory), then describe every step that would
    happen: what would be created, deleted and changed."""
    phases.inspect(ctx)
    state, report = ctx.state, ctx.report
    spec = state.known_spec
    days = _days_left(spec.expires_at)
    within = _threshold(ctx, if_expiring_within)
    due = within is None or state.new_id is not None or (days is not None and days <= within)
    report.due = due
    strategy = ctx.settings.strategy
    rescue = state.rescue
    plan = [
        f"inspect {state.old_id} ({spec.name}, {spec.plan}, PostgreSQL "
        f"{spec.version}, expires {spec.expires_at or 'never'}"
        + (f", {days:.1f} days left)" if days is not None else ")"),
    ]
    if rescue:
        strategy = "create-first"
        if not rescue.upgraded:
            plan.append(
                f"UPGRADE {state.old_id} to {rescue.upgrade_to} (paid, a few cents) to "
                "regain access; wait until it is available"
            )
    freeze_at = len(plan)
    plan += [
        f"freeze writes: {describe_freeze(ctx, ctx.settings.freeze)}",
        f"back up to {ctx.settings.backup_dir} (checked with pg_restore --list, sha256, inventory)",
    ]
    if state.recovered:
        plan[1:] = [
            f"{state.old_id} is already deleted (an interrupted delete-first rotation): "
            f"restore from the backup {state.known_backup.path} (sha256 checked)"
        ]
    elif strategy == "delete-first":
        plan.append(f"DELETE {state.old_id} after the backup is verified")
    if state.new_id:
        provision = (
            f"reuse {state.new_id} ({state.new_name}), the new database of a "
            "half-done rotation found on Render (emptied first)"
        )
    else:
        new_name = naming.new_name(ctx.db.new_name, spec.name, ctx.today or date.today())
        provision = (
            f"create {new_name} (plan {(rescue.plan if rescue else None) or spec.plan}, version "
            f"{ctx.db.version or spec.version}, region {spec.region})"
            + (
                " - or, if Render refuses a second free database: freeze, back up, DELETE "
                f"{state.old_id} (after the verified backup), then create it"
                if strategy == "auto"
                else ""
            )
        )
    if phases.provisions_early(state):
        # before the freeze: the app keeps running while Render provisions
        plan.insert(freeze_at, provision + "; wait until it is available, before the freeze")
    else:
        plan.append(provision)
    plan.append("copy the data (--no-owner --no-privileges) and ANALYZE")
    plan.append(
        f"verify ({ctx.settings.verify}): rows, sequences, definitions, settings, large objects"
    )
    for target in ctx.db.targets:
        plan.append(f"set {target.label} to the new {target.connection} connection string")
    deployed = ", ".join(runtime_services(ctx)) or "no services"
    plan.append(f"thaw and redeploy {deployed} (deploy_only: no new code); wait for live")
    if strategy != "delete-first":
        plan.append(
            f"keep {state.old_id} (keep_old)"
            if ctx.settings.keep_old
            else f"DELETE {state.old_id} once every deploy is live"
        )
    unfinished = Journal.find(_state_dir(ctx.db), ctx.db.label)
    if unfinished is not None and unfinished.unfinished:
        report.notes.append(
            f"an unfinished rotation exists ({unfinished.describe()}): `render-rotator "
            "resume` would continue it"
        )
    report.plan = plan
    report.strategy = strategy
    report.freeze = ctx.settings.freeze
    report.message = (
        "dry run: nothing was changed"
        if due
        else f"dry run: not due (expires in {days:.1f} days)"
        if days is not None
        else "dry run: not due (does not expire)"
    )
    return report


def _land_on_old(ctx: Rotation, phase: str) -> list[str]:
    """Undo a rotation that stopped before the cutover while the old database exists:
    targets back, services thawed, fence lifted, the unused new database deleted.
    Returns what could not be undone."""
    state, report = ctx.state, ctx.report
    problems: list[str] = []
    if state.sealed is not None:
        try:
            sealing.lift_left_seal(ctx)
        except RenderRotatorError as exc:
            problems.append(f"could not lift the seal on {state.old_id}: {scrub(str(exc))}")
    repointed = state.any_repointed
    if repointed:
        try:
            restored = phases.restore_old_values(ctx)
            report.notes.append(f"put {len(restored)} target(s) back on the old database")
            repointed = False
        except RenderRotatorError as exc:
            problems.append(f"could not put the targets back: {scrub(str(exc))}")
    if state.frozen and not repointed:
        try:
            freezing.thaw(ctx)
            if state.frozen.suspended or state.frozen.maintenance:
                report.notes.append("services thawed: they keep using the old database")
        except RenderRotatorError as exc:
            problems.append(f"could not thaw: {scrub(str(exc))}")
    went_live = any(
        r.status in {s.value for s in DEPLOY_SUCCESSFUL} for r in state.deploys.values()
    )
    new_id = state.new_id
    if new_id and not repointed and not (phase == "deploy" and went_live):
        try:
            phases._drop_new(ctx, "nothing uses it")
            report.notes.append(f"deleted the unused new database {new_id}")
        except RenderRotatorError as exc:
            problems.append(f"could not delete the new database {new_id}: {scrub(str(exc))}")
    elif new_id:
        report.notes.append(
            f"kept the new database {new_id}: a deploy using it went live, so it may hold "
            "writes; check it before deleting it"
        )
    return problems


def _on_failure(
    ctx: Rotation, phase: str, exc: RenderRotatorError, *, status: str, resuming: bool
) -> None:
    """Land safely and say what happened and what to do."""
    report, journal = ctx.report, ctx.journal
    report.ok = False
    journal.best_effort = True  # a journal that cannot be written must not stop the landing
    try:
        _land(ctx, phase, exc, status=status, resuming=resuming)
    finally:
        journal.best_effort = False
    if journal.save_error:
        report.message += (
            f". The journal could not be updated ({journal.save_error}): free space there "
            "and run `render-rotator resume`, which re-checks what exists"
        )


def _land(
    ctx: Rotation, phase: str, exc: RenderRotatorError, *, status: str, resuming: bool
) -> None:
    report, state, journal = ctx.report, ctx.state, ctx.journal
    message = scrub(str(exc))
    if isinstance(exc, VerificationError):
        report.notes += [scrub(d) for d in exc.differences[:20]]
    if phase == "inspect" and resuming:
        journal.error = message
        journal.save()
        report.message = (
            f"resume stopped in phase inspect: {message}. Nothing was changed; the journal "
            f"{journal.path} is kept: fix the problem and run `render-rotator resume` again"
        )
    elif (old_exists := _old_exists(ctx)) is None:
        journal.error = message
        journal.save()
        report.message = (
            f"{status} in phase {phase}: {message}. Render could not be asked whether the old "
            f"database {state.old_id} still exists, so nothing was undone; the journal "
            f"{journal.path} is kept: run `render-rotator resume` once Render answers"
        )
    elif old_exists and phase in _BEFORE_CUTOVER:
        problems = _land_on_old(ctx, phase)
        journal.close(status, message)
        journal.archive()
        report.message = (
            f"{status} in phase {phase}: {message}. No cutover: the old database "
            f"{state.old_id} is unchanged and still in use"
        )
        if problems:
            report.message += "; but " + "; ".join(problems)
        rescue = state.rescue
        if rescue is not None and (rescue.upgraded or rescue.upgrading):
            rescuing.remember_pending(ctx)
            report.message += (
                f". It is on the paid plan {rescue.upgrade_to} now (readable again, billed "
                "until deleted): run `render-rotator rotate --rescue` again to move it into a "
                "new free database"
            )
    elif journal.is_done("deploy") and isinstance(exc, DriftError):
        journal.error = message
        journal.save()
        report.message = f"{status} in phase {phase}: {message}"
    elif journal.is_done("deploy"):
        journal.error = message
        journal.save()
        report.message = (
            f"{status} in phase {phase}: {message}. The cutover is done: every target uses "
            f"{state.new_id} and its deploys are live. Run `render-rotator resume` "
            "to finish"
        )
    elif journal.is_done("repoint"):
        journal.error = message
        journal.save()
        report.message = (
            f"{status} in phase {phase}: {message}. The new database {state.new_id} "
            "holds the verified copy and every target uses it (the old one was deleted "
            "after a verified backup); fix the problem and run `render-rotator resume`"
        )
    else:
        if status == "mismatch":
            journal.redo("copy", "verify")  # resume copies again, into an emptied database
        journal.error = message
        journal.save()
        report.message = f"{status} in phase {phase}: {message}. " + _restore_instructions(ctx)
    phases.fill_report(ctx)


def _old_exists(ctx: Rotation) -> bool | None:
    """Whether the old database still exists; None when Render cannot tell us now."""
    if not ctx.state.old_id or ctx.state.old_deleted:
        return False
    try:
        return guard.old_now(ctx) is not None  # re-read: it may have been deleted meanwhile
    except RenderRotatorError:
        return None


def _restore_instructions(ctx: Rotation) -> str:
    """What to do when the old database is gone and the rotation could not finish."""
    state = ctx.state
    backup = state.backup.path if state.backup else None
    targets = ", ".join(t.label for t in ctx.db.targets) or "your services"
    new_id = state.new_id
    where = (
        f"the External Database URL of {new_id} ({state.new_name}) from the Render dashboard"
        if new_id
        else "the External Database URL of a new Render PostgreSQL database"
    )
    return (
        f"The old database {state.old_id} was deleted after a verified backup: "
        f"{backup}. To finish the rotation run `render-rotator resume`. To restore by hand "
        f'instead: `render-rotator restore "$NEW_DATABASE_URL" {backup}` with {where}, then '
        f"point {targets} at it and redeploy"
    )


def _finish(ctx: Rotation) -> None:
    report, journal = ctx.report, ctx.journal
    report.ok = True
    report.rotated = True
    rescuing.forget_pending(ctx)
    journal.close("done")
    phases.fill_report(ctx)
    archived = journal.archive()
    report.journal = str(archived) if archived else None
    new = report.new or {}
    backup = (report.backup or {}).get("path")
    report.message = (
        f"rotated to {new.get('id')} ({new.get('name')}), expires "
        f"{new.get('expires_at') or 'never'}" + (f"; backup {backup}" if backup else "")
    )
