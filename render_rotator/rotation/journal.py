"""The rotation journal: where a rotation got to, written before and after every phase.

One JSON file per configured database in the state directory. It records ids, names,
the backup's path and hash, which services we froze and which targets we repointed — never a
password or connection string — so `resume` can pick up after a crash at any point.
Writes are atomic (temp file + rename) so a crash mid-write leaves the previous version.
What it holds is typed (rotation/state.py): `RotationState` and one `PhaseState` per phase.

Versions: 2 is written. A version 1 journal (free-form dicts under the same key names) is
read and migrated into the typed state, unless it holds a key this version does not know:
then it is refused with one line saying to finish it with the version that started it or to
start over with `rotate --restart`. A newer version is refused the same way.

A journal made with ``persist=False`` lives in memory only: a dry run, and the read-only
inspect that decides whether a rotation is due at all, never leave a file behind. Setting
`persist` later (once the rotation really starts) writes the whole record at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from render_rotator.errors import RotationError, UsageError
from render_rotator.rotation.state import PhaseState, RotationState, StateFormatError
from render_rotator.secrets import holds_secret

log = logging.getLogger("render_rotator.rotation")

JOURNAL_VERSION = 2
#: versions this one reads (1: the untyped journal, migrated on load)
READABLE_VERSIONS = (1, 2)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "database"


def _escaped_strings(data: Any) -> Iterator[str]:
    """Every key and string value in JSON data that JSON's escaping changes (a quote, a
    backslash, a control or non-ASCII character): the saved text does not show it as is."""
    if isinstance(data, str):
        if not (data.isascii() and data.isprintable()) or '"' in data or "\\" in data:
            yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _escaped_strings(str(key))
            yield from _escaped_strings(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _escaped_strings(value)


def _holds_secret(data: Any, text: str) -> bool:
    """Whether the journal holds a secret (render_rotator/secrets.py decides: a URL's
    password, a password= parameter, a registered secret): in its saved `text`, and in each
    string that text shows escaped, checked as the program holds it (a quote in a password
    would otherwise hide it)."""
    return holds_secret(text) or any(holds_secret(s) for s in _escaped_strings(data))


@dataclass
class Journal:
    """The persistent record of one rotation."""

    path: Path
    database: str
    rotation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "running"  # running | done | failed | rolled_back | mismatch | noop
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    phases: dict[str, PhaseState] = field(default_factory=dict)
    state: RotationState = field(default_factory=RotationState)
    error: str | None = None
    persist: bool = field(default=True, compare=False)
    # while landing after a failure: a journal that cannot be written (disk full) must not
    # stop the thaw; the last good version stays on disk and `resume` starts from it
    best_effort: bool = field(default=False, compare=False)
    save_error: str | None = field(default=None, compare=False)

    # -- persistence ------------------------------------------------------------------

    @classmethod
    def path_for(cls, state_dir: Path, database: str) -> Path:
        return state_dir / f"{_safe_name(database)}.journal.json"

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RotationError(
                f"cannot read rotation journal {path}: {exc}",
                hint="fix or remove the file, then run rotate --restart",
            ) from None
        version = data.get("version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS:
            raise RotationError(
                f"journal {path} has version {version!r}, which this render-rotator "
                f"(journal version {JOURNAL_VERSION}) cannot read",
                hint="finish that rotation with the render-rotator version that started it, "
                "or discard it with `render-rotator rotate --restart`",
            )
        try:
            state = RotationState.from_dict(data.get("state") or {})
            phases = {
                name: PhaseState.from_dict(entry, f"phase {name}")
                for name, entry in (data.get("phases") or {}).items()
            }
            journal = cls(
                path=path,
                database=data["database"],
                rotation_id=data["rotation_id"],
                status=data["status"],
                started_at=data["started_at"],
                finished_at=data.get("finished_at"),
                phases=phases,
                state=state,
                error=data.get("error"),
            )
        except (StateFormatError, KeyError, TypeError, ValueError) as exc:
            raise RotationError(
                f"journal {path} (version {version}) does not fit this render-rotator: {exc}",
                hint="finish that rotation with the render-rotator version that started it, "
                "or discard it with `render-rotator rotate --restart`",
            ) from None
        if version != JOURNAL_VERSION:
            log.info(
                "read the version %s journal %s (saved as version %s from now on)",
                version,
                path,
                JOURNAL_VERSION,
            )
        return journal

    @classmethod
    def find(cls, state_dir: Path, database: str) -> Journal | None:
        path = cls.path_for(state_dir, database)
        return cls.load(path) if path.exists() else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JOURNAL_VERSION,
            "database": self.database,
            "rotation_id": self.rotation_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "phases": {name: entry.to_dict() for name, entry in self.phases.items()},
            "state": self.state.to_dict(),
            "error": self.error,
        }

    def save(self) -> None:
        """Atomically replace the journal on disk; refuses to store anything secret-looking.

        A connection string with a password, or any secret registered at run time (database
        passwords, the API key), makes it refuse: the journal is a plain file that may be
        shared when asking for help.
        """
        # not sort_keys: the phases keep the order they ran in
        data = self.to_dict()
        text = json.dumps(data, indent=2, default=str)
        if _holds_secret(data, text):
            raise RotationError(
                f"refusing to write a connection string or password to the journal {self.path}",
                hint="this is a bug in render-rotator: please report it",
            )
        if not self.persist:
            return
        try:
            self._write(text)
        except OSError as exc:
            if not self.best_effort:
                raise
            self.save_error = f"{exc.strerror} writing {exc.filename or self.path}"
            log.warning("could not update the journal %s: %s", self.path, self.save_error)

    def _write(self, text: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create state directory {self.path.parent}: {exc.strerror}",
                hint="set state_dir in the config to a writable directory",
            ) from None
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".journal-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if exc.filename is None:  # a failed write names no file: name the journal
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def archive(self) -> Path | None:
        """Move a finished or discarded journal aside, keeping it for the record.

        Returns where it went; None for a journal that was never written.
        """
        if not self.persist or not self.path.exists():
            return None
        if self.save_error is not None:
            return None  # the file on disk is an older, still running version: keep it
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        stem = self.path.name.removesuffix(".json")
        target = self.path.with_name(f"{stem}.{stamp}.{self.rotation_id}.json")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            if not self.best_effort:
                raise
            self.save_error = f"{exc.strerror} renaming {self.path}"
            return None
        return target

    # -- phases -----------------------------------------------------------------------

    @property
    def unfinished(self) -> bool:
        return self.status == "running"

    def is_done(self, phase: str) -> bool:
        entry = self.phases.get(phase)
        return entry is not None and entry.completed

    def status_of(self, phase: str) -> str | None:
        entry = self.phases.get(phase)
        return entry.status if entry is not None else None

    def _in_order(self, *statuses: str) -> list[str]:
        """Phases with one of `statuses`, in the order they last began."""
        names = [n for n, p in self.phases.items() if p.status in statuses]
        return sorted(names, key=lambda n: self.phases[n].seq)

    def last_phase(self) -> str | None:
        """The last phase that completed (done or skipped), None before any did."""
        names = self._in_order("done", "skipped")
        return names[-1] if names else None

    def interrupted_phase(self) -> str | None:
        """A phase that started (or failed) and never completed: where a crash happened."""
        names = self._in_order("started", "failed")
        return names[-1] if names else None

    def describe(self) -> str:
        """Where this rotation got to, for messages."""
        last = self.last_phase() or "none"
        broken = self.interrupted_phase()
        return f"last completed phase: {last}" + (f", interrupted in: {broken}" if broken else "")

    # The runner (rotation/workflow.py) alone calls the methods below.

    def _entry(self, phase: str) -> PhaseState:
        return self.phases.setdefault(phase, PhaseState(status="started"))

    def begin(self, phase: str) -> None:
        seq = 1 + max((p.seq for p in self.phases.values()), default=0)
        entry = self._entry(phase)
        entry.status, entry.seq = "started", seq
        entry.started_at = now_iso()
        entry.finished_at = None
        entry.attempts += 1
        self.save()

    def _end(self, phase: str, status: str, seconds: float) -> PhaseState:
        entry = self._entry(phase)
        entry.status = status
        entry.finished_at = now_iso()
        entry.seconds = round(entry.seconds + seconds, 3)
        return entry

    def finish(self, phase: str, seconds: float, *, skipped: bool = False) -> None:
        self._end(phase, "skipped" if skipped else "done", seconds)
        self.save()

    def defer(self, phase: str, seconds: float) -> None:
        """The phase gave way to a decision; it runs again once the runner has acted on it."""
        self._end(phase, "deferred", seconds)
        self.save()

    def record_done(self, phase: str) -> None:
        """A phase an earlier run finished and this one proved again: done, not run."""
        entry = self._entry(phase)
        if entry.attempts == 0:
            self.begin(phase)
        self._end(phase, "done", 0.0)
        self.save()

    def fail(self, phase: str, seconds: float, error: str) -> None:
        self._end(phase, "failed", seconds).error = error
        self.save()

    def redo(self, *phases: str) -> None:
        """Mark completed phases to be run again by the next resume (keeps their history)."""
        for phase in phases:
            entry = self.phases.get(phase)
            if entry is not None and entry.completed:
                entry.status = "redo"
        self.save()

    def close(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.finished_at = now_iso()
        self.save()
