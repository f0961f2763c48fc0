"""libpq password files, in one private directory per process.

Each password reaches pg_dump / pg_restore / psql through a 0600 passfile named in
PGPASSFILE, never argv or the environment. The files live in a 0700 directory of this
process (``render-rotator-<pid>-*`` in the temp directory), removed on exit; one left by a
killed run (its process gone) is removed by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from render_rotator.stopping import held

if TYPE_CHECKING:
    from render_rotator.postgres.url import PgURL

PREFIX = "render-rotator-"
_lock = threading.Lock()
_dir: tuple[int, Path] | None = None  # (pid, directory): a forked child makes its own


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove private directories of runs that no longer exist; returns what was removed."""
    base = Path(root or tempfile.gettempdir())
    removed = []
    for path in base.glob(f"{PREFIX}*-*"):
        pid_text = path.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
            continue
        if not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def private_dir() -> Path:
    """This process's 0700 directory (created, and stale ones swept, on first use)."""
    global _dir
    with _lock:
        if _dir is not None and _dir[0] == os.getpid() and _dir[1].is_dir():
            return _dir[1]
        sweep_stale()
        with held():  # made and known together: a stop in between would leave it behind
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            atexit.register(_remove, os.getpid(), path)
        os.chmod(path, 0o700)
        _dir = (os.getpid(), path)
        return path


def _remove(pid: int, path: Path) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def passfile_for(urls: list[PgURL]) -> Iterator[Path]:
    """Write one 0600 .pgpass covering every URL given; remove it on exit."""
    fd, name = tempfile.mkstemp(dir=private_dir(), suffix=".pgpass")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            for u in urls:
                if u.password is None:
                    continue
                fields = [u.host, str(u.port), "*", u.user or "*", u.password]
                handle.write(":".join(_pgpass_escape(f) for f in fields) + "\n")
                # libpq matches "localhost" for Unix-socket connections; cover both spellings.
                if u.host in ("127.0.0.1", "::1"):
                    fields[0] = "localhost"
                    handle.write(":".join(_pgpass_escape(f) for f in fields) + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
