"""Run pg_dump / pg_restore / psql with a wall-clock limit and no secret on the command line.

Each tool runs in its own process group so a timeout (or our own interruption) kills the
tool and every worker it forked. Passwords reach libpq through a 0600 passfile named in
PGPASSFILE; the argv carries only password-less URLs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from render_rotator.errors import CommandTimeoutError, ToolError
from render_rotator.postgres.passfiles import passfile_for
from render_rotator.postgres.url import PgURL
from render_rotator.secrets import scrub

log = logging.getLogger("render_rotator.postgres")

# libpq settings that must not leak in from the caller's environment and override ours.
_SCRUBBED_ENV = ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS")
# The child's environment is built from these only: no RENDER_API_KEY, no
# RENDER_ROTATOR_*_URL, nothing else of ours. PG* (minus the above) keeps libpq settings such
# as PGSSLROOTCERT working; LC_*/LANG keep messages readable.
_KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "TERM")
_KEPT_PREFIXES = ("LC_", "PG")
# Causes worth naming over the tool's last line (a parallel pg_dump ends with "a worker
# process died unexpectedly" after the worker said why).
_CAUSES = (
    "no space left on device",
    "disk quota exceeded",
    "file too large",
    "read-only file system",
    "permission denied",
)


@dataclass(frozen=True)
class ToolResult:
    """What a finished tool left behind."""

    returncode: int
    stderr: str
    seconds: float
    stdout: str = ""


def tool_env(passfile: Path | None, connect_timeout: float | None = None) -> dict[str, str]:
    """The child's environment: ours minus stray libpq secrets, plus our passfile."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (k in _KEPT_ENV or k.startswith(_KEPT_PREFIXES)) and k not in _SCRUBBED_ENV
    }
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    if connect_timeout is not None:
        env["PGCONNECT_TIMEOUT"] = str(max(2, int(round(connect_timeout))))
    return env


def kill_group(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def spawn(
    argv: Sequence[str],
    *,
    urls: Sequence[PgURL],
    connect_timeout: float | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """Start a tool in its own process group; yields (process, stderr file).

    The process group is killed if the block exits while it still runs, so an exception or
    Ctrl-C never leaves a pg_dump behind.
    """
    with passfile_for(list(urls)) as passfile, tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell, no secrets
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=errfile,
            env=tool_env(passfile, connect_timeout),
            start_new_session=True,
            umask=0o077,  # archives and their directories private (0600/0700), always
        )
        try:
            yield proc, errfile
        finally:
            if proc.poll() is None:
                kill_group(proc)


def read_stderr(errfile: IO[bytes], secrets: Sequence[str]) -> str:
    errfile.seek(0)
    return scrub(errfile.read().decode("utf-8", "replace"), list(secrets))


def describe_exit(program: str, returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{program} was killed by {name}"
    return f"{program} exited with code {returncode}"


def run_tool(
    argv: Sequence[str],
    *,
    urls: Sequence[PgURL],
    timeout: float,
    what: str,
    connect_timeout: float | None = None,
    check: bool = True,
    capture_stdout: bool = False,
    stop: threading.Event | None = None,
) -> ToolResult:
    """Run one tool to completion within `timeout` seconds of wall-clock time.

    `what` names the step in errors ("pg_dump of postgresql://u:***@h/db"). `stop`: once
    set (by another thread), the tool is killed within a fraction of a second and ToolError
    says it was stopped.
    """
    program = Path(argv[0]).name
    secrets = [u.password for u in urls if u.password]
    started = time.monotonic()
    log.debug("running %s", scrub(" ".join(argv), secrets))
    out_ctx: contextlib.AbstractContextManager[IO[bytes] | None] = (
        tempfile.TemporaryFile() if capture_stdout else contextlib.nullcontext()  # noqa: SIM115
    )
    with (
        out_ctx as outfile,
        spawn(
            argv,
            urls=urls,
            connect_timeout=connect_timeout,
            stdout=outfile if outfile is not None else subprocess.DEVNULL,
        ) as (proc, errfile),
    ):
        try:
            returncode = _wait(proc, timeout, stop)
        except _StopRequested:
            kill_group(proc, grace=0.5)
            raise ToolError(f"{program} was stopped ({what})", command=program) from None
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise CommandTimeoutError(
                f"{program} timed out after {timeout:g}s ({what}) and was stopped",
                hint="raise --command-timeout / command_timeout for large databases",
                command=program,
            ) from None
        except BaseException:
            kill_group(proc)
            raise
        stderr = read_stderr(errfile, secrets)
        stdout = ""
        if outfile is not None:
            outfile.seek(0)
            stdout = outfile.read().decode("utf-8", "replace")
    seconds = time.monotonic() - started
    if check and returncode != 0:
        line = last_error_line(stderr)
        raise ToolError(
            f"{describe_exit(program, returncode)} ({what}): {line}",
            hint=hint_for_line(line),
            command=program,
        )
    return ToolResult(returncode, stderr, seconds, stdout)


class _StopRequested(Exception):
    """`stop` was set while the tool ran."""


_STOP_POLL = 0.1  # seconds between looks at `stop` while a tool runs


def _wait(proc: subprocess.Popen[bytes], timeout: float, stop: threading.Event | None) -> int:
    """The tool's exit code; TimeoutExpired past `timeout`, _StopRequested once `stop` is set."""
    if stop is None:
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        if stop.is_set():
            raise _StopRequested()
        left = deadline - time.monotonic()
        try:
            return proc.wait(timeout=max(0.0, min(_STOP_POLL, left)))
        except subprocess.TimeoutExpired:
            if left <= _STOP_POLL:
                raise


def last_error_line(stderr: str) -> str:
    """The most telling line of a tool's stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for cause in _CAUSES:
        for line in lines:
            if cause in line.lower():
                return line
    for line in reversed(lines):
        if "error" in line.lower() or "fatal" in line.lower():
            return line
    return lines[-1] if lines else "no error output"


def hint_for_line(line: str) -> str | None:
    """What to do about a tool's error, when its cause is a local one we can name."""
    low = line.lower()
    if "no space left on device" in low or "disk quota exceeded" in low:
        return "free space where the archive is written, or write it to another disk"
    if "permission denied" in low and "could not open" in low:
        return "check the permissions of the path being written"
    return None
