"""rotate() and resume(): run the phases in order, journaled, and land safely on failure.

On any failure before the cutover, the old database stays in use: frozen services are
thawed against it and no env var is changed. A verification mismatch exits 3. Once the
old database is gone (delete-first), nothing is undone: the journal stays open so
`resume` can finish from the verified backup.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from render_rotator.config import Config, DatabaseConfig, load_config
from render_rotator.errors import (
    RenderRotatorError,
    UsageError,
    VerificationError,
)
from render_rotator.logs import scrub
from render_rotator.render import RenderClient
from render_rotator.rotation import freeze as freezing
from render_rotator.rotation import phases
from render_rotator.rotation.context import LogUI, Rotation, RotationUI
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.report import PhaseRecord, RotationReport, RotationResult

log = logging.getLogger("render_rotator.rotation")

ConfirmFn = Callable[[str], bool]


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


def rotate(
    config: Config | str | Path | None = None,
    database: str | None = None,
    *,
    dry_run: bool = False,
    if_expiring_within: int | None = None,
    yes: bool = False,
    restart: bool = False,
    client: RenderClient | None = None,
    ui: RotationUI | None = None,
    confirm: ConfirmFn | None = tty_confirm,
    pg_bin: str | None = None,
    today: date | None = None,
) -> RotationResult:
    """Rotate each configured database (or just `database`) that is due."""
    cfg = _config(config)
    dbs = _databases(cfg, database)
    for db in dbs:
        journal = Journal.find(_state_dir(db), db.label)
        if journal is not None and journal.unfinished and not dry_run:
            if not restart:
                raise UsageError(
                    f"an unfinished rotation of {db.label} exists (last phase: "
                    f"{journal.last_phase()}, journal {journal.path})",
                    hint="run `render-rotator resume` to finish it, or `rotate --restart` to "
                    "start over (what exists on Render is re-discovered)",
                )
            log.warning("discarding the unfinished journal %s (--restart)", journal.path)
            journal.archive()
    own_client = client is None
    api = client or RenderClient()
    try:
        reports = [
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
            )
            for db in dbs
        ]
    finally:
        if own_client:
            api.close()
    return RotationResult(reports)


def resume(
    config: Config | str | Path | None = None,
    database: str | None = None,
    *,
    client: RenderClient | None = None,
    ui: RotationUI | None = None,
    pg_bin: str | None = None,
    yes: bool = True,
) -> RotationResult:
    """Continue every unfinished rotation from its journal's last completed phase."""
    cfg = _config(config)
    pending = []
    for db in _databases(cfg, database):
        journal = Journal.find(_state_dir(db), db.label)
        if journal is not None and journal.unfinished:
            pending.append((db, journal))
    if not pending:
        log.info("nothing to resume: no unfinished rotation journal")
        return RotationResult(
            [RotationReport(database=database or "-", rotated=False, message="nothing to resume")]
        )
    own_client = client is None
    api = client or RenderClient()
    try:
        reports = [
            _run(cfg, db, api, journal=journal, ui=ui or LogUI(), pg_bin=pg_bin, yes=yes)
            for db, journal in pending
        ]
    finally:
        if own_client:
            api.close()
    return RotationResult(reports)


def _run(
    cfg: Config,
    db: DatabaseConfig,
    client: RenderClient,
    *,
    journal: Journal | None,
    dry_run: bool = False,
    if_expiring_within: int | None = None,
    yes: bool = False,
    ui: RotationUI,
    confirm: ConfirmFn | None = None,
    pg_bin: str | None = None,
    today: date | None = None,
) -> RotationReport:
    resuming = journal is not None
    if journal is None:
        path = Journal.path_for(_state_dir(db), db.label)
        journal = Journal(path=path, database=db.label)
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
    )
    if dry_run:
        return _dry_run(ctx, if_expiring_within)

    # inspect first (read-only), then decide whether anything is due at all
    if not resuming:
        if not _inspect_due(ctx, if_expiring_within):
            return report
        _confirm_destruction(ctx)
    current = "inspect"
    try:
        for name, phase in phases.PHASES:
            current = name
            if journal.is_done(name) and name != "inspect":
                report.phases.append(PhaseRecord(name, "done", 0.0))
                continue
            if name == "inspect" and not resuming:
                continue  # already ran in _inspect_due
            _run_phase(ctx, name, phase)
    except VerificationError as exc:
        _on_failure(ctx, current, exc, status="mismatch")
        report.exit_code = 3
        return report
    except RenderRotatorError as exc:
        _on_failure(ctx, current, exc, status="failed")
        report.exit_code = exc.exit_code
        return report
    except BaseException as exc:
        # a crash or Ctrl-C: the journal stays open, ready for `resume`
        journal.fail(current, 0.0, scrub(f"{type(exc).__name__}: {exc}"))
        raise
    _finish(ctx)
    return report


def _run_phase(ctx: Rotation, name: str, phase: phases.Phase) -> None:
    ctx.journal.begin(name)
    started = time.monotonic()
    try:
        with ctx.ui.phase(name):
            ran = phase(ctx)
    except BaseException as exc:
        ctx.journal.fail(name, time.monotonic() - started, scrub(str(exc)))
        ctx.report.phases.append(PhaseRecord(name, "failed", time.monotonic() - started))
        raise
    seconds = time.monotonic() - started
    ctx.journal.finish(name, seconds, skipped=ran is False)
    ctx.report.phases.append(PhaseRecord(name, "skipped" if ran is False else "done", seconds))


def _days_left(expires_at: str | None) -> float | None:
    if not expires_at:
        return None
    when = datetime.fromisoformat(expires_at)
    return (when - datetime.now(UTC)).total_seconds() / 86400


def _inspect_due(ctx: Rotation, if_expiring_within: int | None) -> bool:
    """Run inspect; False (and a no-op report) when the database is not due yet."""
    _run_phase(ctx, "inspect", phases.inspect)
    within = if_expiring_within
    report = ctx.report
    expires = (ctx.state.get("old_spec") or {}).get("expires_at")
    days = _days_left(expires)
    if within is not None and ctx.state.get("new_id") is None and (days is None or days > within):
        report.due = False
        report.ok = True
        report.rotated = False
        report.message = (
            f"not due: expires in {days:.1f} days (threshold {within})"
            if days is not None
            else "not due: this database does not expire"
        )
        ctx.journal.close("noop")
        ctx.journal.archive()
        return False
    return True


def _destroys(ctx: Rotation) -> list[str]:
    state = ctx.state
    if state.get("strategy") == "delete-first" or ctx.settings.strategy == "delete-first":
        return [
            f"delete {state['old_id']} ({state['old_name']}) after a verified backup, "
            "BEFORE the new database exists (free tier: one free database at a time)"
        ]
    if ctx.settings.keep_old and ctx.settings.strategy == "create-first":
        return []
    steps = []
    if not ctx.settings.keep_old:
        steps.append(f"delete {state['old_id']} ({state['old_name']}) once the new one is live")
    if ctx.settings.strategy == "auto":
        steps.append(
            f"if Render refuses a second free database: delete {state['old_id']} after a "
            "verified backup, before creating the new one"
        )
    return steps


def _confirm_destruction(ctx: Rotation) -> None:
    steps = _destroys(ctx)
    if not steps or ctx.yes:
        return
    question = f"rotate {ctx.db.label} will " + "; and ".join(steps) + ". Continue?"
    if ctx.confirm is not None and ctx.confirm(question):
        return
    ctx.journal.close("cancelled")
    ctx.journal.archive()
    asked = ctx.confirm is not None and sys.stdin.isatty()
    raise UsageError(
        f"not confirmed: rotating {ctx.db.label} deletes a database"
        + ("" if asked else " and there is no terminal to confirm on"),
        hint="pass --yes to confirm",
    )


def _dry_run(ctx: Rotation, if_expiring_within: int | None) -> RotationReport:
    """Inspect only, then describe every step that would happen."""
    from render_rotator.rotation.journal import Journal as _J

    # a throwaway journal that never touches disk
    ctx.journal = _J(path=Path("/dev/null"), database=ctx.db.label)
    ctx.journal.save = lambda: None  # type: ignore[method-assign]
    phases.inspect(ctx)
    state, report = ctx.state, ctx.report
    spec = state["old_spec"]
    days = _days_left(spec.get("expires_at"))
    due = if_expiring_within is None or (days is not None and days <= if_expiring_within)
    report.due = due
    new_name = state.get("new_name") or ctx.db.render_new_name(
        spec["name"], ctx.today or date.today()
    )
    strategy = ctx.settings.strategy
    services = ", ".join(ctx.affected_services()) or "no services"
    plan = [
        f"inspect {state['old_id']} ({spec['name']}, {spec['plan']}, PostgreSQL "
        f"{spec['version']}, expires {spec.get('expires_at') or 'never'}"
        + (f", {days:.1f} days left)" if days is not None else ")"),
        f"freeze writes: {ctx.settings.freeze} ({services})",
        f"back up to {ctx.settings.backup_dir} (checked with pg_restore --list, sha256, inventory)",
    ]
    if strategy == "delete-first":
        plan.append(f"DELETE {state['old_id']} after the backup is verified")
    plan.append(
        f"create {new_name} (plan {spec['plan']}, version {ctx.db.version or spec['version']}, "
        f"region {spec['region']})"
        + (
            " - or, if Render refuses a second free database, delete the old one first"
            if strategy == "auto"
            else ""
        )
    )
    plan.append("copy the data (--no-owner --no-privileges) and ANALYZE")
    plan.append("verify: exact row counts per table, sequences, object counts")
    for target in ctx.db.targets:
        plan.append(f"set {target.label} to the new {target.connection} connection string")
    plan.append(
        f"thaw and deploy {', '.join(ctx.affected_services()) or 'no services'}; wait for live"
    )
    if strategy != "delete-first":
        plan.append(
            f"keep {state['old_id']} (keep_old)"
            if ctx.settings.keep_old
            else f"DELETE {state['old_id']} once every deploy is live"
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


def _on_failure(ctx: Rotation, phase: str, exc: RenderRotatorError, *, status: str) -> None:
    """Land safely: thaw against the old database if it still exists; say what happened."""
    report, state = ctx.report, ctx.state
    report.ok = False
    message = scrub(str(exc))
    old_exists = not state.get("old_deleted") and state.get("old_id") and ctx.old is not None
    repointed = any(t.get("repointed") for t in state.get("targets", {}).values())
    if isinstance(exc, VerificationError):
        report.notes += [scrub(d) for d in exc.differences[:20]]
    if old_exists and repointed:
        try:
            restored = phases.restore_old_values(ctx)
            report.notes.append(f"put {len(restored)} target(s) back on the old database")
            repointed = False
        except RenderRotatorError as put_exc:
            report.notes.append(f"could not restore the old values: {scrub(str(put_exc))}")
    if old_exists and not repointed and state.get("frozen"):
        try:
            freezing.thaw(ctx)
            report.notes.append("services thawed: they keep using the old database")
        except RenderRotatorError as thaw_exc:
            report.notes.append(f"could not thaw: {scrub(str(thaw_exc))}")
    if old_exists and status == "mismatch" and state.get("new_id"):
        try:
            ctx.client.delete_postgres(state["new_id"])
            report.notes.append(f"deleted the mismatching copy {state['new_id']}")
            state.pop("new_id", None)
        except RenderRotatorError as del_exc:
            report.notes.append(f"could not delete {state['new_id']}: {scrub(str(del_exc))}")
    if old_exists or phase == "inspect" or not state.get("old_id"):
        ctx.journal.close(status, message)
        ctx.journal.archive()
        tail = "" if phase == "inspect" else " The old database is unchanged and still in use."
        report.message = f"{status} in phase {phase}: {message}.{tail}"
    else:
        ctx.journal.error = message
        ctx.journal.save()  # stays "running": resume can finish from the backup
        backup = (state.get("backup") or {}).get("path")
        report.message = (
            f"{status} in phase {phase}: {message}. The old database was deleted after a "
            f"verified backup ({backup}); run `render-rotator resume` to finish, or restore the "
            f"backup by hand: render-rotator restore NEW_DATABASE_URL {backup}"
        )
    _fill_report(ctx)


def _finish(ctx: Rotation) -> None:
    ctx.report.ok = True
    ctx.report.rotated = True
    ctx.journal.close("done")
    _fill_report(ctx)
    new = ctx.report.new or {}
    ctx.report.message = (
        f"rotated to {new.get('id')} ({new.get('name')}), expires "
        f"{new.get('expires_at') or 'never'}"
    )
    ctx.journal.archive()


def _fill_report(ctx: Rotation) -> None:
    state, report = ctx.state, ctx.report
    report.strategy = state.get("strategy")
    report.freeze = ctx.settings.freeze
    frozen = state.get("frozen") or {}
    if "started_at" in frozen:
        ended = frozen.get("ended_at") or time.time()
        report.freeze_seconds = ended - frozen["started_at"]
    if state.get("rows_copied") is not None:
        report.rows_copied = state["rows_copied"]
    if state.get("backup"):
        b = state["backup"]
        report.backup = {"path": b["path"], "sha256": b["sha256"], "size_bytes": b["size_bytes"]}
        report.bytes_copied = (
            b["size_bytes"] if report.bytes_copied is None else report.bytes_copied
        )
    if report.new is None and state.get("new_id") and ctx.new is not None:
        new = ctx.new
        report.new = {
            "id": new.id,
            "name": new.name,
            "expires_at": new.expires_at.isoformat() if new.expires_at else None,
            "version": new.version,
            "plan": new.plan,
        }
    report.targets = [
        {"target": label, "status": "repointed" if entry.get("repointed") else "unchanged"}
        for label, entry in state.get("targets", {}).items()
    ]
    if not report.deploys and state.get("deploys"):
        report.deploys = [
            {"service_id": s, "deploy_id": r.get("deploy_id"), "status": r.get("status")}
            for s, r in state["deploys"].items()
        ]


def report_dict(result: RotationResult) -> dict[str, Any]:
    return result.to_dict()
