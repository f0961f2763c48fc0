"""What a rotation did, as one JSON-ready object (render_rotator.ui turns it into lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PhaseRecord:
    name: str
    status: str  # done | skipped | failed | interrupted | to redo
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3)}


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
