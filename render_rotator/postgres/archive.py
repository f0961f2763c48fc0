"""pg_dump archives: written atomically, proven readable, hashed, restored without owners.

A backup is only a backup once `pg_restore --list` has read it back and we know its sha256.
Restores run with `--no-owner --no-privileges` and `--exit-on-error`: no error is ever
"ignored". TOC entries that only a superuser may restore and that carry no data (comments
on extensions, on the public schema) are left out up front and reported, so a restore by a
database owner who is not a superuser (as on Render) succeeds cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from render_rotator.errors import BackupError, ToolError
from render_rotator.postgres.binaries import PgBin
from render_rotator.postgres.catalog import is_superuser
from render_rotator.postgres.connect import connection
from render_rotator.postgres.runner import run_tool, tool_env
from render_rotator.postgres.tuning import analyze_parallel, with_settings
from render_rotator.postgres.url import PgURL

log = logging.getLogger("render_rotator.postgres")

# TOC entries a non-superuser cannot restore and that lose nothing when skipped.
_SUPERUSER_ONLY_HARMLESS = (
    re.compile(r"^\d+; \d+ \d+ COMMENT - EXTENSION "),
    re.compile(r"^\d+; \d+ \d+ COMMENT - SCHEMA public "),
)


@dataclass(frozen=True)
class ArchiveInfo:
    """A verified archive on disk."""

    path: Path
    format: str
    size_bytes: int
    sha256: str
    toc_entries: int
    pg_dump_version: str


@dataclass
class RestoreResult:
    """What a restore did, including entries deliberately skipped."""

    seconds: float
    skipped: list[str] = field(default_factory=list)


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory archive (its files in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def check_writable_destination(path: Path) -> None:
    """Fail before dumping when the archive could not be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir() and any(path.iterdir()):
        raise BackupError(
            f"backup path {path} is a non-empty directory",
            hint="choose a new file name",
        )
    if parent.exists() and not parent.is_dir():
        raise BackupError(
            f"cannot write backup to {path}: {parent} is not a directory",
            hint="choose a path inside a writable directory",
        )
    if not parent.exists():
        raise BackupError(
            f"cannot write backup to {path}: directory {parent} does not exist",
            hint="create it or choose another path",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BackupError(
            f"cannot write backup to {path}: directory {parent} is not writable",
            hint="choose a writable location",
        )


def list_archive(
    client: PgBin, path: Path, *, timeout: float, stop: threading.Event | None = None
) -> str:
    """`pg_restore --list`: proves the archive is complete and readable."""
    if not path.exists():
        raise BackupError(f"backup archive {path} does not exist")
    try:
        result = run_tool(
            [client.tool("pg_restore"), "--list", str(path)],
            urls=[],
            timeout=timeout,
            what=f"reading archive {path}",
            capture_stdout=True,
            stop=stop,
        )
    except ToolError as exc:
        raise BackupError(f"backup archive {path} is not readable: {exc.message}") from None
    return result.stdout


def dump(
    client: PgBin,
    source: PgURL,
    path: Path,
    *,
    timeout: float,
    connect_timeout: float,
    lock_wait_timeout: float | None = None,
    archive_format: str = "custom",
    jobs: int = 1,
    compress: str | None = None,
    snapshot: str | None = None,
    stop: threading.Event | None = None,
) -> ArchiveInfo:
    """pg_dump `source` into `path` atomically: a partial dump never takes the final name.

    `stop`: set it from another thread to kill pg_dump (ToolError; nothing takes the name)."""
    check_writable_destination(path)
    partial = path.with_name(path.name + ".partial")
    _remove(partial)
    argv = [
        client.tool("pg_dump"),
        f"--format={archive_format}",
        f"--file={partial}",
        f"--lock-wait-timeout={int((lock_wait_timeout or timeout) * 1000)}",
        "--no-password",
    ]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    if compress is None and archive_format in ("custom", "directory"):
        compress = best_compression(client)  # lz4 / zstd where the build has them
    if compress is not None:
        argv.append(f"--compress={compress}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    argv.append(f"--dbname={source.public_url()}")
    try:
        run_tool(
            argv,
            urls=[source],
            timeout=timeout,
            what=f"pg_dump of {source.redacted()}",
            connect_timeout=connect_timeout,
            stop=stop,
        )
        toc = list_archive(client, partial, timeout=timeout, stop=stop)
        _remove(path)
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise
    info = ArchiveInfo(
        path=path,
        format=archive_format,
        size_bytes=size_of(path),
        sha256=sha256_path(path),
        toc_entries=sum(1 for ln in toc.splitlines() if ln and not ln.startswith(";")),
        pg_dump_version=client.version,
    )
    log.info("backup written: %s (%d bytes, sha256 %s)", path, info.size_bytes, info.sha256)
    return info


def remove_stale_partials(directory: Path, prefix: str) -> list[Path]:
    """Remove `prefix`*.partial archives a killed run left in `directory`; the caller holds
    the lock that keeps any other run from writing one now."""
    removed = []
    for path in directory.glob(f"{glob.escape(prefix)}*.partial"):
        _remove(path)
        removed.append(path)
        log.info("removed %s, left by an interrupted backup", path)
    return removed


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file (a manifest next to a 0600 archive)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as exc:
        if exc.filename is None:  # a failed write names no file: name it
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def restore_list(toc: str, *, superuser: bool) -> Iterator[tuple[Path, list[str]]]:
    """A `pg_restore -L` list with superuser-only, data-free entries commented out."""
    skipped: list[str] = []
    lines = []
    for line in toc.splitlines():
        if not superuser and any(p.match(line) for p in _SUPERUSER_ONLY_HARMLESS):
            skipped.append(line.split(" ", 3)[-1])
            lines.append(";" + line)
        else:
            lines.append(line)
    fd, name = tempfile.mkstemp(prefix="render-rotator-", suffix=".list")
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    try:
        yield Path(name), skipped
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def restore(
    client: PgBin,
    target: PgURL,
    path: Path,
    *,
    timeout: float,
    connect_timeout: float,
    superuser: bool,
    jobs: int = 1,
) -> RestoreResult:
    """pg_restore into an existing database; all-or-nothing when serial."""
    toc = list_archive(client, path, timeout=timeout)
    with restore_list(toc, superuser=superuser) as (list_file, skipped):
        argv = [
            client.tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            f"--use-list={list_file}",
            f"--dbname={target.public_url()}",
        ]
        argv += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
        argv.append(str(path))
        result = run_tool(
            argv,
            urls=[target],
            timeout=timeout,
            what=f"pg_restore into {target.redacted()}",
            connect_timeout=connect_timeout,
        )
    for entry in skipped:
        log.info("skipped (needs a superuser, holds no data): %s", entry)
    return RestoreResult(seconds=result.seconds, skipped=skipped)


# -- the fast backup-then-restore path: parallel directory archives ------------------------

# Fastest first: compression costs CPU on both ends, and the copy's speed is the downtime.
_COMPRESSION_PREFERENCE = ("lz4", "zstd:1", "gzip:1")


def _compression_supported(client: PgBin, spec: str) -> bool:
    """Ask pg_dump itself: it rejects a method its build lacks before it connects anywhere."""
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no secrets, unreachable port
            [
                client.tool("pg_dump"),
                f"--compress={spec}",
                "--schema-only",
                "--no-password",
                "--dbname=postgresql://127.0.0.1:1/render_rotator_probe",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=tool_env(None, connect_timeout=2),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    low = proc.stderr.lower()
    return "compression" not in low and "invalid value" not in low


@functools.lru_cache(maxsize=16)
def _best_compression(directory: str, major: int) -> str:
    if major < 16:
        return "1"  # pg_dump <= 15 takes a gzip level only
    client = PgBin(Path(directory), major, str(major))
    for spec in _COMPRESSION_PREFERENCE:
        if _compression_supported(client, spec):
            return spec
    return "gzip:1"


def best_compression(client: PgBin) -> str:
    """The cheapest good compression this pg_dump build supports: lz4, zstd, else gzip 1."""
    return _best_compression(str(client.directory), client.major)


def dump_parallel(
    client: PgBin,
    source: PgURL,
    path: Path,
    *,
    jobs: int,
    timeout: float,
    connect_timeout: float,
    compress: str | None = None,
    snapshot: str | None = None,
    lock_wait_timeout: float | None = None,
) -> ArchiveInfo:
    """A directory-format archive written by `jobs` pg_dump workers, listed and hashed.

    Compression defaults to `best_compression(client)`. Like `dump()`, the archive only takes
    its final name once `pg_restore --list` has read it back.
    """
    return dump(
        client,
        source,
        path,
        timeout=timeout,
        connect_timeout=connect_timeout,
        lock_wait_timeout=lock_wait_timeout,
        archive_format="directory",
        jobs=max(1, jobs),
        compress=compress or best_compression(client),
        snapshot=snapshot,
    )


def restore_parallel(
    client: PgBin,
    target: PgURL,
    path: Path,
    *,
    jobs: int,
    timeout: float,
    connect_timeout: float,
    superuser: bool | None = None,
    maintenance_work_mem: str | None = None,
    analyze: bool = True,
) -> RestoreResult:
    """pg_restore -j `jobs` of a directory archive, then ANALYZE in parallel.

    Index builds may get a larger `maintenance_work_mem` per session (through the
    connection options, never the server's configuration; None keeps the server's, the
    safe choice on small instances); `superuser` is looked up when not given.
    """
    started = time.monotonic()
    if superuser is None:
        with connection(target, connect_timeout=connect_timeout, statement_timeout=timeout) as conn:
            superuser = is_superuser(conn)
    tuned = target
    if maintenance_work_mem:
        tuned = with_settings(target, {"maintenance_work_mem": maintenance_work_mem})
    result = restore(
        client,
        tuned,
        path,
        timeout=timeout,
        connect_timeout=connect_timeout,
        superuser=superuser,
        jobs=max(1, jobs),
    )
    if analyze:
        remaining = max(1.0, timeout - (time.monotonic() - started))
        analyze_parallel(target, jobs=jobs, connect_timeout=connect_timeout, timeout=remaining)
    return RestoreResult(seconds=time.monotonic() - started, skipped=result.skipped)


# -- the archive's table of contents (`pg_restore --list`) ------------------------------------

_TOC_LINE = re.compile(r"^(\d+);\s+(\d+)\s+(\d+)\s+(.*)$")
PG_CLASS = 1259  # catalog OIDs in pg_restore --list lines
PG_CONSTRAINT = 2606
PG_LARGEOBJECT = 2613


@dataclass
class TocEntry:
    """One line of `pg_restore --list`: `dump_id; catalog oid description`."""

    line: str
    dump_id: int
    catalog: int
    oid: int
    desc: str


def parse_toc(toc: str) -> list[TocEntry]:
    """The entries of a listing; comment lines (`;`) and anything unparsable are left out."""
    entries = []
    for line in toc.splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append(
                TocEntry(
                    line,
                    int(match.group(1)),
                    int(match.group(2)),
                    int(match.group(3)),
                    match.group(4),
                )
            )
    return entries


def is_large_object_entry(line: str) -> bool:
    """pg_dump counts large objects' metadata (lo_create, comments) as data."""
    match = _TOC_LINE.match(line)
    if not match:
        return False
    desc = match.group(4)
    return int(match.group(2)) == PG_LARGEOBJECT or " - LARGE OBJECT " in f" {desc}"
