"""How the rotation tells someone what it is doing, without knowing who: the `RotationUI`
protocol (phases, waits, copy progress) that render_rotator.ui implements for a terminal,
GitHub Actions or plain lines, and `LogUI`, the plain-log default.

Defined here, below the display, so the rotation never imports render_rotator.ui.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger("render_rotator.rotation")


class PhaseShown:
    """What `phase()` yields: the rotation sets `skipped` when the phase had nothing to do,
    so the display says "skipped" rather than "done 0.0s"; and `gave_way` when the phase
    stopped for a decision the runner acts on before running it again (it is not done)."""

    def __init__(self) -> None:
        self.skipped = False
        self.gave_way: str | None = None


class CopyMeter(Protocol):
    """Where a copy's progress goes; `update` takes a table's running totals (not
    increments) and may be called from several threads."""

    def update(self, table: str, bytes_done: int, rows_done: int) -> None: ...

    def table_done(self, table: str) -> None: ...

    def measure_bytes(self, size: int) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: Any) -> Any: ...


class RotationUI(Protocol):
    """What the phases tell the person watching (terminal, Actions log, or plain lines).

    The rotation knows its display only through this protocol (render_rotator.ui implements
    it), so nothing below the command line imports the display.
    """

    def phase(self, name: str) -> contextlib.AbstractContextManager[Any]: ...

    def waiting(self, what: str) -> contextlib.AbstractContextManager[Any]: ...

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyMeter: ...

    def watch_copy(
        self,
        url: str,
        progress: CopyMeter,
        *,
        expected_rows: Mapping[str, int] | None = None,
        track_rows: bool = True,
        connect_timeout: float = 10.0,
    ) -> contextlib.AbstractContextManager[Any]:
        """Feed `progress` from the target's own view of a copy into `url` while it runs
        (a display's business: it never fails the copy)."""
        ...


class _Unshown:
    """Copy progress nobody watches: LogUI's."""

    def update(self, table: str, bytes_done: int, rows_done: int) -> None:
        pass

    def table_done(self, table: str) -> None:
        pass

    def measure_bytes(self, size: int) -> None:
        pass

    def __enter__(self) -> _Unshown:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass


class LogUI:
    """Plain log lines: the default when no richer UI is attached."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseShown]:
        log.info("phase %s: started", name)
        started = time.monotonic()
        shown = PhaseShown()
        yield shown
        if shown.gave_way:
            log.info("phase %s: paused: %s", name, shown.gave_way)
        elif shown.skipped:
            log.info("phase %s: skipped (nothing to do)", name)
        else:
            log.info("phase %s: done in %.1fs", name, time.monotonic() - started)

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        log.info("waiting for %s", what)
        yield

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyMeter:
        return _Unshown()

    def watch_copy(
        self,
        url: str,
        progress: CopyMeter,
        *,
        expected_rows: Mapping[str, int] | None = None,
        track_rows: bool = True,
        connect_timeout: float = 10.0,
    ) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()
