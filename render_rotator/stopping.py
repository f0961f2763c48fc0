"""SIGTERM and SIGHUP stop a command the way Ctrl-C does: through its normal cleanup.

Python's default for SIGTERM and SIGHUP is to die on the spot, skipping every `finally` and
`with` exit: a sandbox's PostgreSQL server kept running, its data directory stayed behind, a
rotation's journal missed its last words. `install()` turns both signals into `Terminated`, a
KeyboardInterrupt, so every path that already cleans up after Ctrl-C cleans up after them too.
A repeated signal during that cleanup is ignored rather than cutting it short.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum: int, frame: FrameType | None) -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # one stop request is enough: let cleanup finish
    raise Terminated(signum)


def install() -> Callable[[], None]:
    """Route SIGTERM/SIGHUP into `Terminated`; returns a function restoring the old handlers.

    Outside the main thread (where signals cannot be handled) it does nothing.
    """
    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _raise)

    def restore() -> None:
        with contextlib.suppress(ValueError):
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    return restore


@contextlib.contextmanager
def cleanup_uninterrupted() -> Iterator[None]:
    """Inside: Ctrl-C, SIGTERM and SIGHUP wait, so removing servers and files completes."""
    saved: dict[int, Any] = {}
    with contextlib.suppress(ValueError):
        for sig in (signal.SIGINT, *SIGNALS):
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            for signum, handler in saved.items():
                signal.signal(signum, handler)


def describe(exc: BaseException) -> str:
    """'interrupted' (Ctrl-C) or 'stopped by SIGTERM'."""
    return f"stopped by {exc.name}" if isinstance(exc, Terminated) else "interrupted"
