"""What a rotation did, for people (lines) and machines (one JSON object)."""

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
    due: bool = True
    strategy: str | None = None
    freeze: str | None = None
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    freeze_seconds: float | None = None
    rows_copied: int | None = None
    bytes_copied: int | None = None
    backup: dict[str, Any] | None = None
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
            "targets": self.targets,
            "deploys": self.deploys,
            "plan": self.plan,
            "message": self.message,
            "exit_code": self.exit_code,
            "notes": self.notes,
            "journal": self.journal,
        }

    def lines(self) -> list[str]:
        """A plain-text report for a person."""
        out = [f"{self.database}: {self.message}"]
        if self.plan:
            out.append("plan:")
            out += [f"  {i}. {step}" for i, step in enumerate(self.plan, 1)]
        if self.old:
            out.append(f"  old: {self.old.get('id')} ({self.old.get('name')})")
        if self.new:
            out.append(
                f"  new: {self.new.get('id')} ({self.new.get('name')}), "
                f"expires {self.new.get('expires_at') or 'never'}"
            )
        if self.strategy:
            out.append(f"  strategy: {self.strategy}, freeze: {self.freeze}")
        for phase in self.phases:
            out.append(f"  {phase.name:<12} {phase.status:<8} {phase.seconds:8.2f}s")
        if self.freeze_seconds is not None:
            out.append(f"  write freeze: {self.freeze_seconds:.1f}s")
        if self.rows_copied is not None:
            size = f", {self.bytes_copied} bytes" if self.bytes_copied is not None else ""
            out.append(f"  copied: {self.rows_copied} rows{size}")
        if self.backup:
            backup_size = self.backup.get("size_bytes")
            out.append(
                f"  backup: {self.backup.get('path')} ("
                + (f"{backup_size} bytes, " if backup_size is not None else "")
                + f"sha256 {self.backup.get('sha256')})"
            )
        for target in self.targets:
            out.append(f"  target {target['target']}: {target['status']}")
        for deploy in self.deploys:
            kind = " (rollback)" if deploy.get("rollback") else ""
            out.append(
                f"  deploy{kind} {deploy['service_id']} {deploy['deploy_id']}: {deploy['status']}"
            )
        out += [f"  note: {n}" for n in self.notes]
        return out


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
