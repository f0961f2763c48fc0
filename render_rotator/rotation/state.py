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
import types
import typing
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
            dumped = _dump(value)
            if dumped == {} and dataclasses.is_dataclass(value):
                continue  # a record with nothing in it yet
            out[f.name] = dumped
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


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type (scalars, optionals, lists of scalars)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):  # JSON has one number type; a bool is not a number here
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(
            value, bool
        )
    if hint in (str, bool):
        return isinstance(value, hint)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return True  # nested records are checked by their own readers


def _record[R](cls: type[R], data: Any, where: str) -> R:
    """A flat record from its JSON object: an unknown or missing key, or a value of the
    wrong type, is a StateFormatError naming it."""
    data = _known(cls, data, where)
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if not _fits(value, hints[name]):
            raise StateFormatError(f"{where}.{name} is not a {hints[name]}: {value!r}")
    return cls(**data)


_ALWAYS: dict[str, Any] = {"always": True}


def _list() -> Any:
    return field(default_factory=list)


@dataclass
class FrozenServices:
    """What the write freeze did (rotation/write_freeze.py), so a landing undoes exactly that.

    `pending` lists a service before the call that freezes it, so a run cut off between the
    call and the journal knows the frozen service it finds is ours. Times are epoch seconds.
    """

    mode: str
    suspended: list[str] = field(default_factory=list, metadata=_ALWAYS)
    maintenance: list[str] = field(default_factory=list, metadata=_ALWAYS)
    pending: list[str] = _list()
    thawed: list[str] = _list()
    started_at: float | None = None  # the write window opened (not for freeze = none)
    ended_at: float | None = None
    readonly: bool = False  # the old database was made read-only (freeze = readonly)
    fenced: bool = False  # made read-only for the cutover, whatever the freeze mode
    readonly_reset: bool = False  # ... and writable again (a landing)

    @property
    def in_window(self) -> bool:
        return self.started_at is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrozenServices:
        return _record(cls, data, "frozen")


@dataclass
class DeployRecord:
    """One service's deploy (or rollback deploy): requested before the call, so a crash in
    between finds the deploy Render started instead of starting a second one."""

    requested_at: float | None = None
    deploy_id: str | None = None
    status: str | None = None  # Render's status; "refused" / "unknown" are ours
    reason: str | None = None  # why Render refused it

    @classmethod
    def from_dict(cls, data: dict[str, Any], service_id: str) -> DeployRecord:
        return _record(cls, data, f"deploy of {service_id}")


@dataclass
class Rescue:
    """An expired free database being rescued (rotation/rescue.py): upgraded to a paid plan
    to regain access, copied into a new free database, then deleted."""

    plan: str
    upgrade_to: str
    expired_at: str | None = None
    deleted_at: str | None = None
    upgrading: bool = False  # journaled before the plan change on Render
    upgraded: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rescue:
        return _record(cls, data, "rescue")


@dataclass
class CreateRequest:
    """The create request for the new database: one Render made by this name after
    `requested_at` (epoch seconds) is ours, even before we recorded its id."""

    name: str
    requested_at: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreateRequest:
        return _record(cls, data, "creating")


@dataclass
class FreeSlotWait:
    """Render refusing a second free database while it frees the deleted one's slot
    (rotation/free_slot.py): since when (epoch seconds), how many refusals."""

    since: float
    refusals: int = field(default=0, metadata=_ALWAYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> FreeSlotWait:
        return _record(cls, data, where)


@dataclass
class Recovered:
    """Finished from a backup after the journal was lost (rotation/recovery.py)."""

    backup: str
    new_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recovered:
        return _record(cls, data, "recovered")


@dataclass
class CopySummary:
    """How the copy was made (the copy phase): method, time, bytes, entries skipped."""

    method: str
    seconds: float | None = None
    bytes: int | None = None
    skipped: list[str] = field(default_factory=list, metadata=_ALWAYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CopySummary:
        return _record(cls, data, "copy")


@dataclass
class VerificationSummary:
    """The verify phase's outcome in figures (the differences themselves are reported, not
    kept: they may quote row values)."""

    mode: str
    seconds: float
    tables: int
    rows: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationSummary:
        return _record(cls, data, "verification")


@dataclass
class DriftSummary:
    """The old database changed after the snapshot: which tables, how many differences."""

    tables: list[str] = field(default_factory=list, metadata=_ALWAYS)
    differences: int = field(default=0, metadata=_ALWAYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftSummary:
        return _record(cls, data, "drift")


@dataclass
class CopyProof:
    """The verify phase proved `new_id` equal to the snapshot (rotation/guard.py)."""

    new_id: str | None
    method: str
    at: str


@dataclass
class DriftRecord:
    """The last drift check of `old_id` (rotation/guard.py). "unchanged", not "passed":
    a journal key spelling "pass" could be taken for a secret."""

    old_id: str | None
    unchanged: bool = field(metadata=_ALWAYS)
    method: str
    summary: str
    at: str


@dataclass
class SealRecord:
    """The old database sealed for its deletion (rotation/sealing.py): written before the
    seal, so that whichever run lands back on it (a failed check or DELETE, an interrupt,
    `resume` after a kill) puts its connection limit back."""

    old_id: str
    previous_limit: int = field(metadata=_ALWAYS)  # -1: none
    sessions: int
    at: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SealRecord:
        return _record(cls, data, "sealed")


@dataclass
class GuardFacts:
    """Facts the guard (rotation/guard.py) relies on before a destructive action."""

    copy: CopyProof | None = None
    drift: DriftRecord | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardFacts:
        data = _known(cls, data, "facts")
        copy, drift = data.get("copy"), data.get("drift")
        return cls(
            copy=_record(CopyProof, copy, "facts.copy") if copy is not None else None,
            drift=_record(DriftRecord, drift, "facts.drift") if drift is not None else None,
        )


@dataclass
class RunSummary:
    """What the report phase keeps of a finished rotation."""

    old_id: str | None = None
    new_id: str | None = None
    rows_copied: int | None = None
    bytes_copied: int | None = None
    freeze_seconds: float | None = None
    backup: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        return _record(cls, data, "summary")


# Two fields stay plain JSON objects, on purpose: `inventory` and `fingerprint` are the
# postgres/ modules' own records (postgres/inventory.py, postgres/fingerprint.py), whose
# content is open (one entry per table, sequence and definition of the database) and which
# those classes serialise and validate themselves; typing them again here would be a second
# definition to keep in step.
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
    creating: CreateRequest | None = None
    created_ids: list[str] = field(default_factory=list)
    # -- services and targets
    services: list[str] | None = field(default=None, metadata={"always": True})
    service_types: dict[str, str] = field(default_factory=dict)
    targets: dict[str, TargetState] = field(default_factory=dict)
    frozen: FrozenServices | None = None
    adopt_frozen: bool = False
    rescue: Rescue | None = None
    # -- backup and copy
    backup: BackupFacts | None = None
    inventory: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    source_bytes: int | None = None
    copy_started: bool = False
    copy: CopySummary | None = None
    bytes_copied: int | None = None
    rows_copied: int | None = None
    free_slot_wait: FreeSlotWait | None = None
    free_slot_waited: FreeSlotWait | None = None
    # -- proof
    verified: bool | None = None
    verification: VerificationSummary | None = None
    drift: DriftSummary | None = None
    facts: GuardFacts = field(default_factory=GuardFacts)
    sealed: SealRecord | None = None  # the old database is sealed right now
    # -- cutover
    deploys: dict[str, DeployRecord] = field(default_factory=dict)
    rollback_deploys: dict[str, DeployRecord] = field(default_factory=dict)
    rolled_back: bool = False
    recovered: Recovered | None = None
    summary: RunSummary | None = None

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
            for name, reader in _READERS.items():
                if data.get(name) is not None:
                    data[name] = reader(data[name])
            data["facts"] = GuardFacts.from_dict(data.get("facts") or {})
            for name in ("deploys", "rollback_deploys"):
                records = data.get(name) or {}
                if not isinstance(records, dict):
                    raise StateFormatError(f"{name} is not an object")
                data[name] = {s: DeployRecord.from_dict(r, s) for s, r in records.items()}
            state = cls(**data)
        except TypeError as exc:  # a missing required field, say
            raise StateFormatError(str(exc)) from None
        state.created_ids = list(state.created_ids or [])
        state.service_types = dict(state.service_types or {})
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


#: the state's records read from one JSON object each
_READERS: dict[str, Any] = {
    "frozen": FrozenServices.from_dict,
    "rescue": Rescue.from_dict,
    "creating": CreateRequest.from_dict,
    "free_slot_wait": lambda d: FreeSlotWait.from_dict(d, "free_slot_wait"),
    "free_slot_waited": lambda d: FreeSlotWait.from_dict(d, "free_slot_waited"),
    "recovered": Recovered.from_dict,
    "copy": CopySummary.from_dict,
    "verification": VerificationSummary.from_dict,
    "drift": DriftSummary.from_dict,
    "sealed": SealRecord.from_dict,
    "summary": RunSummary.from_dict,
}


def _required[T](value: T | None, name: str) -> T:
    if value is None:
        raise StateFormatError(f"the rotation's state has no {name} yet")
    return value
