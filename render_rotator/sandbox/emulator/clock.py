"""The emulator's sense of time, injectable so tests move it instead of waiting.

Everything that depends on time in the emulator (a database becoming ``available``, a deploy
going ``live``, a free database expiring, rate-limit windows, injected latency) reads one
`Clock`. The real one follows the wall clock; `ManualClock` stands still until a test
advances it, so a test of "creating, then available" needs no sleep at all.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the emulator needs of a clock: epoch seconds, waiting, and moving forward."""

    def time(self) -> float:
        """Now, in epoch seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let `seconds` pass (injected latency, polling helpers)."""
        ...

    def advance(self, seconds: float) -> None:
        """Jump forward by `seconds` (expiry tests: 30 days do not have to pass)."""
        ...


class SystemClock:
    """The wall clock, plus an offset that `advance` grows (the served sandbox's clock)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += float(seconds)

    def __repr__(self) -> str:
        return f"SystemClock(offset={self._offset:g})"


class ManualClock:
    """A clock that moves only when told: `advance`, or `sleep` (which advances at once).

    Starts at the wall clock's now by default so timestamps look current.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._now += float(seconds)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:.6f})"
