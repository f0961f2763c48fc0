"""pg_dump archives: written atomically, proven readable, hashed, restored without owners.

A backup is only a backup once `pg_restore --list` has read it back and we know its sha256.
Restores run with `--no-owner --no-privileges` and `--exit-on-error`: no error is ever
"ignored". TOC entries that only a superuser may restore and that carry no data (comments
on extensions, on the public schema) are left out up front and reported, so a restore by a
database owner who is not a superuser (as on Render) succeeds cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from render_rotator.errors import BackupError, ToolError
from render_rotator.postgres.binaries import PgBin
from render_rotator.postgres.runner import run_tool
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


def list_archive(client: PgBin, path: Path, *, timeout: float) -> str:
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
) -> ArchiveInfo:
    """pg_dump `source` into `path` atomically: a partial dump never takes the final name."""
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
        )
        toc = list_archive(client, partial, timeout=timeout)
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
