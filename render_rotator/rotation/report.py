"""What a rotation did, for people (lines) and machines (one JSON object).

The report is derived from the rotation's typed state (rotation/state.py) by `derive_report`,
so a resumed run reports the whole rotation and the phase table shows what the journal
recorded: each phase's outcome, its own time, and when it began and ended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from render_rotator.render import Postgres
    from render_rotator.rotation.state import PhaseState, RotationState

#: how the report names a journal status that is not an outcome
_SHOWN_STATUS = {"started": "interrupted", "redo": "to redo"}


@dataclass
class PhaseRecord:
    name: str
    status: str  # done | skipped | failed | interrupted | to redo
    seconds: float
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.started_at is not None:
            out.update(
                started_at=self.started_at, finished_at=self.finished_at, attempts=self.attempts
            )
        return out


@dataclass
class RotationReport:
    """The outcome of rotating one database."""

    database: str
    ok: bool = True
    rotated: bool = False
    dry_run: bool = False
    due: bool | None = True  # None: not evaluated (resume with nothing to finish)
    strategy: str | None = None
    freeze: str | None = None
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    freeze_seconds: float | None = None
    rows_copied: int | None = None
    bytes_copied: int | None = None
    backup: dict[str, Any] | None = None
    # how the copy was proven (mode, tables, rows, seconds) and any drift of the old database
    verification: dict[str, Any] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    message: str = ""
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)
    #: changes of course the runner took (e.g. fall back to delete-first), in order
    decisions: list[dict[str, Any]] = field(default_factory=list)
    journal: str | None = None  # where the finished rotation's journal was archived

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rotated": self.rotated,
            "dry_run": self.dry_run,
            "due": self.due,
            "database": self.database,
            "strategy": self.strategy,
            "freeze": self.freeze,
            "old": self.old,
            "new": self.new,
            "phases": [p.to_dict() for p in self.phases],
            "freeze_seconds": None
            if self.freeze_seconds is None
            else round(self.freeze_seconds, 3),
            "rows_copied": self.rows_copied,
            "bytes_copied": self.bytes_copied,
            "backup": self.backup,
            "verification": self.verification,
            "targets": self.targets,
            "deploys": self.deploys,
            "plan": self.plan,
            "message": self.message,
            "exit_code": self.exit_code,
            "notes": self.notes,
            "decisions": self.decisions,
            "journal": self.journal,
        }


@dataclass
class RotationResult:
    """Reports for every database a `rotate` call looked at."""

    reports: list[RotationReport]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def exit_code(self) -> int:
        """One code for the whole run: 0 when every database is done or not due; else the
        most serious: 1 (a failure) over 3 (a mismatch, no cutover) over 2 (bad input)."""
        codes = {r.exit_code for r in self.reports if r.exit_code}
        for code in (1, 3, 2):
            if code in codes:
                return code
        return max(codes) if codes else 0

    def to_dict(self) -> dict[str, Any]:
        if len(self.reports) == 1:
            return self.reports[0].to_dict()
        return {
            "ok": self.ok,
            "rotated": any(r.rotated for r in self.reports),
            "exit_code": self.exit_code,
            "databases": [r.to_dict() for r in self.reports],
        }


def phase_rows(phases: Mapping[str, PhaseState], order: Sequence[str]) -> list[PhaseRecord]:
    """The phase table: one row per recorded phase, in the rotation's order."""
    rank = {name: i for i, name in enumerate(order)}
    recorded = sorted(phases.items(), key=lambda item: rank.get(item[0], len(rank)))
    return [
        PhaseRecord(
            name,
            _SHOWN_STATUS.get(entry.status, entry.status),
            entry.seconds,
            started_at=entry.started_at,
            finished_at=entry.finished_at,
            attempts=entry.attempts,
        )
        for name, entry in recorded
    ]


def describe_postgres(pg: Postgres) -> dict[str, Any]:
    return {
        "id": pg.id,
        "name": pg.name,
        "expires_at": pg.expires_at.isoformat() if pg.expires_at else None,
        "version": pg.version,
        "plan": pg.plan,
    }


def derive_report(
    rep: RotationReport,
    state: RotationState,
    phases: Mapping[str, PhaseState],
    *,
    order: Sequence[str],
    freeze: str,
    new: dict[str, Any] | None,
) -> None:
    """Fill `rep` from the state: phases and their durations, the write-freeze window,
    rows and bytes copied, old and new databases, the backup, targets and deploys.
    `new`: the new database as Render describes it now (None: not known now)."""
    rep.strategy = state.strategy or rep.strategy
    rep.freeze = freeze
    rep.phases = phase_rows(phases, order)
    frozen = state.frozen
    if frozen is not None and frozen.started_at is not None:
        ended = frozen.ended_at or time.time()
        rep.freeze_seconds = max(0.0, ended - frozen.started_at)
    if state.rows_copied is not None:
        rep.rows_copied = state.rows_copied
    if state.bytes_copied is not None:
        rep.bytes_copied = state.bytes_copied
    if state.verification or state.drift:
        rep.verification = asdict(state.verification) if state.verification else {}
        if state.drift:
            rep.verification["old_database_changed"] = asdict(state.drift)
    if state.backup is not None:
        b = state.backup
        rep.backup = {
            "path": b.path,
            "manifest": b.manifest,
            "sha256": b.sha256,
            "size_bytes": b.size_bytes,
        }
    if state.old_id:
        spec = state.old_spec
        rep.old = {
            "id": state.old_id,
            "name": state.old_name,
            "expires_at": spec.expires_at if spec else None,
            "version": spec.version if spec else None,
            "plan": spec.plan if spec else None,
            "deleted": state.old_deleted,
        }
    if new is not None:
        rep.new = new
    elif not state.new_id:
        rep.new = None
    rep.targets = [
        {"target": label, "status": "repointed" if entry.repointed else "unchanged"}
        for label, entry in state.targets.items()
    ]
    rep.deploys = [
        {
            "service_id": service_id,
            "deploy_id": record.deploy_id,
            "status": record.status,
            "rollback": rollback,
        }
        for rollback, records in ((False, state.deploys), (True, state.rollback_deploys))
        for service_id, record in records.items()
    ]
    if state.decisions:
        rep.decisions = [
            {"decision": d.kind, "phase": d.phase, "at": d.at, "reason": d.reason}
            for d in state.decisions
        ]
