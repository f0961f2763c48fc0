"""One rotation of a database at a time, across machines and state directories.

The lease is a record on the database being rotated itself (its ``COMMENT ON DATABASE``, see
postgres/stamp.py): every run that could rotate a database must connect to it, so every run
sees the record, wherever it runs. Taking and renewing it are compare-and-set transactions on
that server, timed by the server's clock (no clock skew between machines).

- A run takes the lease after its read-only inspection and before its first change; a second
  run finds it held and stops with the holder's host, pid, state directory and start time.
- The lease moves with the data: it is also written on the new database the moment it is
  available (with the marker proving this rotation created it), so it survives the old
  database's deletion in delete-first. While neither exists (between that deletion and the
  new database carrying the marker) the only thing another run could act from is the
  backup: so before deleting the old database, the lease is also written beside the backup
  archive (``.<archive>.lease``, same record, renewed by the same heartbeat, removed once the
  new database carries the lease), and a run that would finish from that backup
  (rotation/recovery.py) refuses while it is live. A run that
  has no access to the backup finds no database its targets use and stops.
- A heartbeat thread renews it every `lease_ttl / 3` seconds; the guard re-confirms it right
  before every destructive action, so a run whose lease was taken over stops there.
- A holder that died stops renewing: its lease expires `lease_ttl` seconds after the last
  renewal and the next run takes it over. On the same machine (same boot and pid namespace) a
  lease whose process no longer exists is taken over at once.
- The record names the services the run froze and how (``"frozen": {service: "suspend" |
  "maintenance"}``), written before each freeze call and updated after each thaw. The journal
  knows the same, but the journal may be lost with its machine: the run that takes a dead
  run's lease over inherits that list (`Lease.inherited`), so it thaws exactly the services
  the dead run froze, and never one the user suspended themselves. A run that ends with
  services still frozen (its rotation unfinished) leaves its record behind, expired, for the
  same reason; otherwise releasing removes it.
- Likewise the record names a database the run is about to seal for its deletion, and the
  connection limit it had (``"sealed": {postgres id: limit}``, rotation/sealing.py): a run
  killed while it was sealed leaves it open to a few sessions only, and the run that takes
  the lease over puts the limit back even without the journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from render_rotator.errors import RenderRotatorError, RotationError, UsageError
from render_rotator.postgres.stamp import Stamp, read_stamp, update_stamp

log = logging.getLogger("render_rotator.rotation")


class LeaseHeldError(UsageError):
    """Another run holds the lease on this database; nothing was changed."""


class LeaseLostError(RotationError):
    """Our lease expired and another run took it: stop before changing anything else."""


def _machine() -> str | None:
    """This boot and pid namespace: where a pid means the same process (None: unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{pidns}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(lease: dict[str, Any]) -> str:
    """Who holds a lease, for people: host, pid, state dir, start and expiry."""
    return (
        f"run on host {lease.get('host')} (pid {lease.get('pid')}, state dir "
        f"{lease.get('state_dir')}), started {lease.get('started_at')}, lease expires "
        f"{lease.get('expires_at')} unless renewed"
    )


def is_stale(lease: dict[str, Any], now: datetime) -> bool:
    """Expired (no heartbeat within its ttl), or its process is gone from this machine."""
    try:
        expires = datetime.fromisoformat(lease["expires_at"])
    except (KeyError, TypeError, ValueError):
        return True
    if now >= expires:
        return True
    machine = lease.get("machine")
    pid = lease.get("pid")
    return (
        machine is not None
        and machine == _machine()
        and isinstance(pid, int)
        and pid != os.getpid()
        and not _alive(pid)
    )


def frozen_by(lease: dict[str, Any]) -> dict[str, str]:
    """The services a lease's run froze and had not thawed, by the action taken on each."""
    frozen = lease.get("frozen")
    if not isinstance(frozen, dict):
        return {}
    return {
        str(service_id): action
        for service_id, action in frozen.items()
        if action in ("suspend", "maintenance")
    }


def sealed_by(lease: dict[str, Any]) -> dict[str, int]:
    """The seals a lease record names: postgres id -> the connection limit to put back."""
    sealed = lease.get("sealed")
    if not isinstance(sealed, dict):
        return {}
    return {
        str(postgres_id): int(limit)
        for postgres_id, limit in sealed.items()
        if isinstance(limit, int) and not isinstance(limit, bool)
    }


def held_error(database: str, held: dict[str, Any]) -> LeaseHeldError:
    return LeaseHeldError(
        f"another render-rotator run is rotating {database}: {describe(held)}; nothing was changed",
        hint="wait for it to finish; if that run died, its lease expires by itself "
        f"{held.get('ttl', '?')}s after its last heartbeat (see README, 'One rotation at a time')",
    )


def file_for(archive: Path) -> Path:
    """Where the lease beside a backup archive lives: hidden, and not ``*.json`` (never
    taken for a manifest); removed once the new database carries the lease."""
    return archive.with_name(f".{archive.name}.lease")


@contextlib.contextmanager
def _locked_file(path: Path) -> Any:
    """The lease file opened and flock'ed: a read-decide-write on it is atomic."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _read_file_record(fd: int) -> Any:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None  # torn or foreign: no live lease can be read from it


def _write_file_record(fd: int, record: dict[str, Any] | None) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    if record is not None:
        os.write(fd, json.dumps(record).encode())
    os.fsync(fd)


def read_file(path: Path) -> Any:
    """The record in the lease file beside a backup (None when there is none or it is
    unreadable); changes nothing."""
    if not path.exists():
        return None
    try:
        with _locked_file(path) as fd:
            return _read_file_record(fd)
    except OSError as exc:
        log.info("could not read the lease %s: %s", path, exc)
        return None


def check_file_free(path: Path, *, database: str) -> None:
    """Raise LeaseHeldError if a live lease is beside this backup (changes nothing)."""
    if not path.exists():
        return
    try:
        with _locked_file(path) as fd:
            held = _read_file_record(fd)
    except OSError as exc:
        log.info("could not read the lease %s: %s", path, exc)
        return
    if isinstance(held, dict) and not is_stale(held, _now()):
        raise held_error(database, held)


def _now() -> datetime:
    return datetime.now(UTC)


def check_free(url: str, *, database: str, connect_timeout: float = 30) -> None:
    """Raise LeaseHeldError if a live lease is on this database (changes nothing)."""

    def look(stamp: Stamp, now: datetime) -> Stamp:
        held = stamp.get("lease")
        if isinstance(held, dict) and not is_stale(held, now):
            raise held_error(database, held)
        return stamp

    update_stamp(url, look, connect_timeout=connect_timeout)


def left_frozen(url: str, *, connect_timeout: float = 30) -> dict[str, str]:
    """What a dead run's lease on this database says it froze and never thawed (read-only;
    empty when no run died here, or while the run holding the lease is alive)."""
    held = read_stamp(url, connect_timeout=connect_timeout).get("lease")
    if not isinstance(held, dict) or not is_stale(held, _now()):
        return {}
    return frozen_by(held)


@dataclass
class Lease:
    """This run's lease on one database's rotation (the `homes` carry the record)."""

    database: str
    state_dir: str
    ttl: float = 120.0
    connect_timeout: float = 30.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: str | None = None
    homes: dict[str, str] = field(default_factory=dict, repr=False)  # postgres id -> url
    files: list[Path] = field(default_factory=list)  # beside a backup (see the docstring)
    lost: str | None = None
    #: services this run froze and has not thawed: service id -> "suspend" / "maintenance"
    frozen: dict[str, str] = field(default_factory=dict)
    #: what the dead runs whose leases this run took over had frozen (same shape)
    inherited: dict[str, str] = field(default_factory=dict)
    #: databases this run is about to seal: postgres id -> the connection limit to put back
    sealed: dict[str, int] = field(default_factory=dict)
    #: seals the dead runs whose leases this run took over left (same shape)
    inherited_seals: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _record(self, now: datetime) -> dict[str, Any]:
        if self.started_at is None:
            self.started_at = now.isoformat()
        return {
            "token": self.token,
            "database": self.database,
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": os.getpid(),
            "state_dir": self.state_dir,
            "started_at": self.started_at,
            "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=self.ttl)).isoformat(),
            "ttl": self.ttl,
            "frozen": dict(self.frozen),
            **({"sealed": dict(self.sealed)} if self.sealed else {}),
        }

    def _take(self, stamp: Stamp, now: datetime) -> Stamp:
        held = stamp.get("lease")
        if isinstance(held, dict) and held.get("token") != self.token and not is_stale(held, now):
            raise held_error(self.database, held)
        if isinstance(held, dict) and held.get("token") not in (None, self.token):
            log.warning("taking over a stale lease: %s", describe(held))
            self._inherit(held)
        return {**stamp, "lease": self._record(now)}

    def _inherit(self, held: dict[str, Any]) -> None:
        """A dead run's frozen services become ours to thaw (kept in our record at once, so
        a run that dies in turn hands them on)."""
        for service_id, action in frozen_by(held).items():
            self.inherited.setdefault(service_id, action)
            self.frozen.setdefault(service_id, action)
        for postgres_id, limit in sealed_by(held).items():
            self.inherited_seals.setdefault(postgres_id, limit)
            self.sealed.setdefault(postgres_id, limit)

    def _renew(self, stamp: Stamp, now: datetime) -> Stamp:
        held = stamp.get("lease")
        if isinstance(held, dict) and held.get("token") not in (None, self.token):
            raise LeaseLostError(
                f"the lease on {self.database} was taken over by another {describe(held)}",
                hint="this run stopped before its next destructive step; let the other run "
                "finish, then check `render-rotator status`",
            )
        return {**stamp, "lease": self._record(now)}

    def _drop(self, stamp: Stamp, now: datetime) -> Stamp:
        held = stamp.get("lease")
        if not isinstance(held, dict) or held.get("token") != self.token:
            return stamp
        if self.frozen or self.sealed:
            # services stay frozen (or a database sealed): the record stays, expired,
            # naming them (see the docstring)
            record = self._record(now)
            record["expires_at"] = record["renewed_at"]
            return {**stamp, "lease": record}
        return {k: v for k, v in stamp.items() if k != "lease"}

    # -- taking, keeping, giving back ------------------------------------------------------

    def acquire(self, postgres_id: str, url: str, extra: Stamp | None = None) -> None:
        """Take (or renew) the lease on this database; `extra` is merged into the record in
        the same transaction (the creation marker). Raises LeaseHeldError."""

        def take(stamp: Stamp, now: datetime) -> Stamp:
            return {**self._take(stamp, now), **(extra or {})}

        with self._lock:
            update_stamp(url, take, connect_timeout=self.connect_timeout)
            self.homes[postgres_id] = url
        self._start()

    def acquire_file(self, path: Path) -> None:
        """Take (or renew) the lease beside a backup archive; raises LeaseHeldError."""
        with self._lock:
            with _locked_file(path) as fd:
                stamp = _read_file_record(fd)
                held = {"lease": stamp} if isinstance(stamp, dict) else {}
                _write_file_record(fd, self._take(held, _now())["lease"])
            if path not in self.files:
                self.files.append(path)
        self._start()

    def _renew_files(self) -> None:
        for path in list(self.files):
            try:
                with _locked_file(path) as fd:
                    stamp = _read_file_record(fd)
                    held = {"lease": stamp} if isinstance(stamp, dict) else {}
                    _write_file_record(fd, self._renew(held, _now())["lease"])
            except OSError as exc:
                log.warning("could not renew the lease %s: %s", path, exc)

    def drop_files(self) -> None:
        """The new database carries the lease now: the one beside the backup can go."""
        with self._lock:
            self._drop_files()

    def _drop_files(self) -> None:
        for path in self.files:
            try:
                with _locked_file(path) as fd:
                    stamp = _read_file_record(fd)
                    if isinstance(stamp, dict) and stamp.get("token") == self.token:
                        path.unlink(missing_ok=True)
            except OSError as exc:
                log.info("lease %s not removed (it expires by itself): %s", path, exc)
        self.files.clear()

    def note_sealed(self, postgres_id: str, previous_limit: int) -> None:
        """Before this run seals `postgres_id`: its lease there says so, and which connection
        limit to put back, so a run without the journal lifts a seal a killed run left."""
        with self._lock:
            self.sealed[postgres_id] = previous_limit
            url = self.homes.get(postgres_id)
            if url is not None:
                update_stamp(url, self._renew, connect_timeout=self.connect_timeout)

    def note_unsealed(self, postgres_id: str) -> None:
        """The seal on `postgres_id` is lifted (or the database is gone)."""
        with self._lock:
            self.sealed.pop(postgres_id, None)
            self.inherited_seals.pop(postgres_id, None)

    def forget(self, postgres_id: str) -> None:
        """This database is about to be deleted: stop renewing there."""
        with self._lock:
            self.homes.pop(postgres_id, None)

    def confirm(self) -> None:
        """Renew now, on every home; raise LeaseLostError if another run holds any of them.

        The guard calls this right before each destructive action.
        """
        if self.lost:
            raise LeaseLostError(self.lost)
        with self._lock:
            try:
                self._renew_files()
            except LeaseLostError as exc:
                self.lost = str(exc)
                raise
            homes = dict(self.homes)
            confirmed = 0
            for postgres_id, url in homes.items():
                try:
                    update_stamp(url, self._renew, connect_timeout=self.connect_timeout)
                    confirmed += 1
                except LeaseLostError as exc:
                    self.lost = str(exc)
                    raise
                except RenderRotatorError as exc:
                    log.warning("could not renew the lease on %s: %s", postgres_id, exc)
            if homes and not confirmed:
                raise RotationError(
                    f"could not confirm the lease on {self.database}: no database carrying it "
                    "answered",
                    hint="check the network, then run `render-rotator resume`",
                )

    def release(self) -> None:
        """Stop the heartbeat and remove our record wherever it still is (best effort: a
        record left behind expires by itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout + 5)
        with self._lock:
            for postgres_id, url in self.homes.items():
                try:
                    update_stamp(url, self._drop, connect_timeout=self.connect_timeout)
                except RenderRotatorError as exc:
                    log.info("lease on %s not removed (it expires by itself): %s", postgres_id, exc)
            self.homes.clear()
            self._drop_files()

    # -- what this run froze -------------------------------------------------------------

    def note_frozen(self, service_id: str, action: str) -> None:
        """Before freezing `service_id` (`action`: "suspend" / "maintenance"): written on
        every home now, so a run cut off right after the freeze call is still known to
        have made it. Raises (and nothing is frozen) when the lease cannot be confirmed."""
        with self._lock:
            self.frozen[service_id] = action
        self.confirm()

    def keep_frozen(self, service_id: str, action: str) -> None:
        """A service this rotation's journal says it froze: named in the record from the
        next renewal on (a resumed run whose lease did not name it yet)."""
        with self._lock:
            self.frozen.setdefault(service_id, action)

    def note_thawed(self, service_id: str) -> None:
        """After thawing `service_id`: no later run may take it as frozen by this rotation
        (best effort: a service named but found running is never thawed again anyway)."""
        with self._lock:
            if self.frozen.pop(service_id, None) is None:
                return
        try:
            self.confirm()
        except RenderRotatorError as exc:
            log.info("could not update the lease after thawing %s: %s", service_id, exc)

    # -- heartbeat -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self.database}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(RenderRotatorError):
                self.confirm()
