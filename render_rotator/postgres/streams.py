"""Child processes of the copy, and the pipes between them.

A data stream is two tools (a `psql` running `COPY ... TO STDOUT` on the source, a `psql`
running `COPY ... FROM STDIN` on the target) joined by OS pipes that this process only
splices: no row ever becomes a Python object and memory stays constant. Every process
is registered in `ToolProcesses`, so that the first failure can kill them all, and waits
on the copy's `Deadline`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from render_rotator.errors import CommandTimeoutError, CopyError
from render_rotator.postgres.runner import (
    describe_exit,
    kill_group,
    last_error_line,
    read_stderr,
    spawn,
)
from render_rotator.postgres.url import PgURL

PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
_COPY_TAG = re.compile(rb"^COPY (\d+)$", re.MULTILINE)


class Deadline:
    """The copy's wall-clock limit (`command_timeout`), shared by every step and process."""

    def __init__(self, seconds: float, *, command: str = "copy") -> None:
        self.seconds = seconds
        self.command = command
        self.at = time.monotonic() + seconds

    def error(self, stopped: bool = False) -> CommandTimeoutError:
        return CommandTimeoutError(
            f"the {self.command} did not finish within command_timeout ({self.seconds:g}s)"
            + (" and was stopped" if stopped else ""),
            hint="raise --command-timeout / command_timeout"
            + ("" if stopped else " for large databases"),
            command=self.command,
        )

    def remaining(self) -> float:
        """Seconds left; raises CommandTimeoutError once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.error()
        return left

    def ms(self) -> int:
        """What is left, in milliseconds, for server-side timeouts (at least one second)."""
        return max(1000, int(self.remaining() * 1000))


class ToolProcesses:
    """Every tool process the copy runs, so that a failure can stop them all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def track(self, *procs: subprocess.Popen[bytes]) -> Iterator[None]:
        with self._lock:
            if self.stopping.is_set():
                for proc in procs:
                    kill_group(proc, grace=0.5)
                raise Stopped()
            self._procs.update(procs)
        try:
            yield
        finally:
            with self._lock:
                self._procs.difference_update(procs)

    def wait(self, deadline: Deadline, *procs: subprocess.Popen[bytes]) -> list[int]:
        """Exit codes of `procs`; past the deadline every process is killed."""
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=deadline.remaining()))
            except subprocess.TimeoutExpired:
                self.stop_all()
                raise deadline.error() from None
        return codes

    def stop_all(self) -> None:
        with self._lock:
            self.stopping.set()
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc, grace=0.5)


class Stopped(Exception):
    """Raised inside a worker when the copy is being stopped because of another failure."""


def stream_failure(
    source: tuple[str, int, str], target: tuple[str, int, str], relay_error: OSError | None
) -> str:
    """Name the real cause: a source that failed on its own, else the target's error.

    When the target dies the source only sees a broken pipe, and when the source dies the
    target only sees truncated input; both sides are named when both failed on their own.
    """
    (src_prog, src_code, src_text), (dst_prog, dst_code, dst_text) = source, target
    src_echo = src_code == -signal.SIGPIPE or any(
        p in src_text.lower() for p in ("broken pipe", "could not write", "could not send")
    )
    causes = []
    if src_code != 0 and not src_echo:
        causes.append(
            f"{describe_exit(src_prog + ' (source)', src_code)}: {last_error_line(src_text)}"
        )
    if dst_code != 0:
        causes.append(
            f"{describe_exit(dst_prog + ' (target)', dst_code)}: {last_error_line(dst_text)}"
        )
    if not causes and src_code != 0:
        causes.append(
            f"{describe_exit(src_prog + ' (source)', src_code)}: {last_error_line(src_text)}"
        )
    if not causes:
        causes.append(f"the stream between source and target broke: {relay_error}")
    return "; ".join(causes)


def pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_BYTES)
    return r, w


def relay(read_fd: int, write_fd: int, on_bytes: Callable[[int], None]) -> int:
    """Move bytes from one pipe to the other until EOF; splice keeps them in the kernel."""
    total = 0
    splice = getattr(os, "splice", None)
    while True:
        if splice is not None:
            try:
                moved = splice(read_fd, write_fd, PIPE_BYTES)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS):
                    splice = None
                    continue
                raise
        else:
            data = os.read(read_fd, PIPE_BYTES)
            moved = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view) :]
        if moved == 0:
            return total
        total += moved
        on_bytes(moved)


@dataclass
class StreamOutcome:
    rows: list[int]
    bytes: int


def stream(
    what: str,
    source_argv: list[str],
    target_argv: list[str],
    *,
    source: PgURL,
    target: PgURL,
    procs: ToolProcesses,
    deadline: Deadline,
    connect_timeout: float,
    on_bytes: Callable[[int], None],
) -> StreamOutcome:
    """Run a source tool into a target tool through a pipe pair; raise CopyError on failure."""
    secrets = [u.password for u in (source, target) if u.password]
    src_r, src_w = pipe()
    dst_r, dst_w = pipe()
    fds = {src_r, src_w, dst_r, dst_w}

    def close(fd: int) -> None:
        if fd in fds:
            fds.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    moved = 0
    relay_error: OSError | None = None
    try:
        with (
            tempfile.TemporaryFile() as target_out,
            spawn(
                source_argv,
                urls=[source],
                connect_timeout=connect_timeout,
                stdout=src_w,
            ) as (src_proc, src_err),
            spawn(
                target_argv,
                urls=[target],
                connect_timeout=connect_timeout,
                stdin=dst_r,
                stdout=target_out,
            ) as (dst_proc, dst_err),
            procs.track(src_proc, dst_proc),
        ):
            close(src_w)
            close(dst_r)
            try:
                moved = relay(src_r, dst_w, on_bytes)
            except OSError as exc:  # the target went away (EPIPE); its error says why
                relay_error = exc
            close(src_r)
            close(dst_w)
            codes = procs.wait(deadline, dst_proc, src_proc)
            if procs.stopping.is_set() and any(c != 0 for c in codes):
                raise Stopped()
            dst_code, src_code = codes
            if dst_code != 0 or src_code != 0 or relay_error is not None:
                cause = stream_failure(
                    (Path(source_argv[0]).name, src_code, read_stderr(src_err, secrets)),
                    (Path(target_argv[0]).name, dst_code, read_stderr(dst_err, secrets)),
                    relay_error,
                )
                raise CopyError(f"copying {what} failed: {cause}")
            target_out.seek(0)
            rows = [int(m) for m in _COPY_TAG.findall(target_out.read())]
    finally:
        for fd in list(fds):
            close(fd)
    return StreamOutcome(rows=rows, bytes=moved)
