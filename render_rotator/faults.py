"""Exceptions from outside our own error tree, told as one line that names the cause.

A full disk, a file that cannot be written, a bug: each must still end in the safe state and
one clear line (``No space left on device writing backups/x.dump.json``), never a bare
traceback. The traceback is logged at debug level, shown with ``-v``.
"""

from __future__ import annotations

import errno
import logging

import psycopg2

from render_rotator.errors import RenderRotatorError, RotationError
from render_rotator.secrets import scrub

log = logging.getLogger("render_rotator")

# errno values that only a write can cause: "writing" names what failed
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

_HINTS = {
    errno.ENOSPC: "free some space on that disk (or point backup_dir / state_dir elsewhere)",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EFBIG: "the file grew past a size limit; raise it or write elsewhere",
    errno.EROFS: "that file system is read-only; point backup_dir / state_dir elsewhere",
    errno.EACCES: "check the permissions of that path",
    errno.EPERM: "check the permissions of that path",
}


def describe(exc: BaseException) -> str:
    """One line naming what went wrong, secrets removed."""
    if isinstance(exc, RenderRotatorError):
        return scrub(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename
        if where is None:
            return scrub(exc.strerror)
        verb = "writing" if exc.errno in _WRITE_ERRNOS else "on"
        return scrub(f"{exc.strerror} {verb} {where}")
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    if isinstance(exc, psycopg2.Error):
        return scrub(f"PostgreSQL refused{detail}")
    return scrub(f"unexpected {type(exc).__name__}{detail}")


def hint_for(exc: BaseException) -> str | None:
    """What to do about it, when we can tell."""
    if isinstance(exc, OSError) and exc.errno in _HINTS:
        return _HINTS[exc.errno]
    if isinstance(exc, RenderRotatorError):
        return None
    if getattr(exc, "pgcode", None) == "42501":
        return "grant the database user read access to every object, or run as its owner"
    if isinstance(exc, psycopg2.Error):
        return "run with -v for the details"
    return "run with -v for the traceback and report it if it looks like a bug"


def as_error(exc: BaseException) -> RenderRotatorError:
    """Our error type for any exception (ours pass through); the traceback goes to debug."""
    if isinstance(exc, RenderRotatorError):
        return exc
    log.debug("traceback of the unexpected error", exc_info=exc)
    wrapped = RotationError(describe(exc), hint=hint_for(exc))
    wrapped.__cause__ = exc
    return wrapped
