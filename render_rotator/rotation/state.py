"""The rotation's state as typed records: what the journal saves and the report is made from.

`RotationState` holds the facts one rotation has learned and the decisions it took; every field
is declared here with its type, so a misspelt key is a type error rather than a silently new
entry. `PhaseState` is one phase's bookkeeping (status, when it began and ended, its own time),
which only the runner (rotation/workflow.py) writes.

Serialised form (journal version 2): ``state`` is a JSON object with one key per field that is
set (fields at their empty default are left out), ``phases`` maps each phase name to its record.
Version 1 journals used the same key names as free-form dicts, so they load through the same
reader; a key this version does not know is refused with one line saying how to finish that
rotation (`StateFormatError`), never dropped silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

#: phase statuses the journal records ("deferred": a phase gave way to a decision the runner
#: took, and will run again after it)
PHASE_STATUSES = ("started", "done", "skipped", "failed", "redo", "deferred")


class StateFormatError(ValueError):
    """A journal's state does not fit this version's records (unknown key, wrong type)."""


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` restricted to `cls`'s fields; an unknown key is an error naming it."""
    if not isinstance(data, dict):
        raise StateFormatError(f"{where} is not an object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StateFormatError(f"{where} has unknown key(s) {', '.join(unknown)}")
    required = {
        f.name
        for f in fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise StateFormatError(f"{where} lacks {', '.join(missing)}")
    return data


def _dump(obj: Any) -> Any:
    """A record as JSON data, leaving out fields at their empty default (None, False, empty)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if (value is False or value == [] or value == {}) and not f.metadata.get("always"):
                continue
            out[f.name] = _dump(value)
        return out
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_dump(v) for v in obj]
    return obj


@dataclass
class PhaseState:
    """One phase's record: written only by the runner."""

    status: str
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float = field(default=0.0, metadata={"always": True})
    attempts: int = 0
    seq: int = 0  # the order phases last began in
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.status in ("done", "skipped")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "phase") -> PhaseState:
        data = _known(cls, data, where)
        status = data.get("status")
        if status not in PHASE_STATUSES:
            raise StateFormatError(f"{where} has an unknown status {status!r}")
        return cls(
            status=status,
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            seconds=float(data.get("seconds") or 0.0),
            attempts=int(data.get("attempts") or 0),
            seq=int(data.get("seq") or 0),
            error=data.get("error"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        return out


@dataclass
class DatabaseSpec:
    """The old database as Render described it: what its replacement copies."""

    name: str
    plan: str
    version: str
    region: str
    database_name: str | None = None
    database_user: str | None = None
    ip_allow_list: list[dict[str, Any]] = field(default_factory=list, metadata={"always": True})
    environment_id: str | None = None
    expires_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseSpec:
        return cls(**_known(cls, data, "old_spec"))


@dataclass
class BackupFacts:
    """The verified backup archive on disk (path, manifest beside it, sha256)."""

    path: str
    sha256: str
    manifest: str | None = None
    size_bytes: int | None = None
    format: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupFacts:
        return cls(**_known(cls, data, "backup"))


@dataclass
class TargetState:
    """One env var target: whether it was repointed, and a fingerprint of its old value (the
    value itself holds a password and is never stored)."""

    repointed: bool = field(default=False, metadata={"always": True})
    old_kind: str | None = None
    old_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], label: str) -> TargetState:
        return cls(**_known(cls, data, f"target {label}"))


@dataclass
class Decision:
    """A change of course a phase asked for (rotation/decisions.py) and the runner took.

    Recorded before the runner acts on it (`applied` False), so a run killed in between
    acts on it when resumed."""

    kind: str
    phase: str
    at: str
    reason: str
    phases: list[str] = field(default_factory=list)
    applied: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**_known(cls, data, "decision"))


# The fields below that stay plain JSON objects belong to one module each, which documents
# their keys: frozen (rotation/freeze.py), rescue (rotation/rescue.py), facts (rotation/
# guard.py), deploys (phases.run_deploys), inventory and fingerprint (postgres/, serialised
# by their own classes), free_slot_wait (rotation/free_slot.py).
@dataclass
class RotationState:
    """Everything one rotation knows and decided, as the journal saves it."""

    # -- the old database
    old_id: str | None = None
    old_name: str | None = None
    owner_id: str | None = None
    old_spec: DatabaseSpec | None = None
    old_deleted: bool = False
    old_deleted_elsewhere: bool = False  # someone else deleted it after the copy was proven
    # -- strategy (auto | create-first | delete-first as asked; the one in use)
    requested_strategy: str | None = None
    strategy: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    # -- the new database
    new_id: str | None = None
    new_name: str | None = None
    new_adopted: bool = False  # found on Render, not created by this run: emptied first
    new_deleted: str | None = None  # id of a new database a landing deleted
    creating: dict[str, Any] | None = None  # {"name", "requested_at"}: the create request
    created_ids: list[str] = field(default_factory=list)
    # -- services and targets
    services: list[str] | None = field(default=None, metadata={"always": True})
    service_types: dict[str, str] = field(default_factory=dict)
    targets: dict[str, TargetState] = field(default_factory=dict)
    frozen: dict[str, Any] | None = None
    adopt_frozen: bool = False
    rescue: dict[str, Any] | None = None
    # -- backup and copy
    backup: BackupFacts | None = None
    inventory: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    source_bytes: int | None = None
    copy_started: bool = False
    copy: dict[str, Any] | None = None
    bytes_copied: int | None = None
    rows_copied: int | None = None
    free_slot_wait: dict[str, Any] | None = None
    free_slot_waited: dict[str, Any] | None = None
    # -- proof
    verified: bool | None = None
    verification: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # -- cutover
    deploys: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollback_deploys: dict[str, dict[str, Any]] = field(default_factory=dict)
    rolled_back: bool = False
    recovered: dict[str, Any] | None = None  # finished from a backup after the journal was lost
    summary: dict[str, Any] | None = None

    @property
    def any_repointed(self) -> bool:
        return any(t.repointed for t in self.targets.values())

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision)

    @property
    def pending(self) -> list[Decision]:
        return [d for d in self.decisions if not d.applied]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        if self.verified is False:  # a failed proof is a fact, not an empty default
            out["verified"] = False
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RotationState:
        """Read a journal's state (version 1 or 2); StateFormatError when it does not fit."""
        data = dict(_known(cls, data, "state"))
        try:
            if data.get("old_spec") is not None:
                data["old_spec"] = DatabaseSpec.from_dict(data["old_spec"])
            if data.get("backup") is not None:
                data["backup"] = BackupFacts.from_dict(data["backup"])
            data["targets"] = {
                label: TargetState.from_dict(entry, label)
                for label, entry in (data.get("targets") or {}).items()
            }
            data["decisions"] = [Decision.from_dict(d) for d in data.get("decisions") or []]
            state = cls(**data)
        except TypeError as exc:  # a missing required field, say
            raise StateFormatError(str(exc)) from None
        state.created_ids = list(state.created_ids or [])
        state.service_types = dict(state.service_types or {})
        state.facts = dict(state.facts or {})
        state.deploys = dict(state.deploys or {})
        state.rollback_deploys = dict(state.rollback_deploys or {})
        return state

    # -- facts a phase relies on being known by now --------------------------------------
    # (each raises StateFormatError when missing: a journal that lacks it cannot be resumed)

    @property
    def known_old_id(self) -> str:
        return _required(self.old_id, "old_id")

    @property
    def known_new_id(self) -> str:
        return _required(self.new_id, "new_id")

    @property
    def known_spec(self) -> DatabaseSpec:
        return _required(self.old_spec, "old_spec")

    @property
    def known_backup(self) -> BackupFacts:
        return _required(self.backup, "backup")

    @property
    def known_inventory(self) -> dict[str, Any]:
        return _required(self.inventory, "inventory")


def _required[T](value: T | None, name: str) -> T:
    if value is None:
        raise StateFormatError(f"the rotation's state has no {name} yet")
    return value
