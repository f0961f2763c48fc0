"""SIGTERM and SIGHUP stop a command the way Ctrl-C does: through its normal cleanup.

Python's default for SIGTERM and SIGHUP is to die on the spot, skipping every `finally` and
`with` exit: a sandbox's PostgreSQL server kept running, its data directory stayed behind, a
rotation's journal missed its last words. `install()` turns both signals into `Terminated`, a
KeyboardInterrupt, so every path that already cleans up after Ctrl-C cleans up after them too.
A repeated signal during that cleanup is ignored rather than cutting it short.

Two gaps of raising from a signal handler are closed here:

- Python runs a handler wherever the main thread happens to be, and that may be a finalizer
  (a weakref callback of the import system, a `__del__`) whose exceptions Python prints as
  "Exception ignored" and drops: the stop request was lost and the command ran on. The
  `sys.unraisablehook` that `install()` adds raises such a dropped interruption again at
  the next line of ordinary code.
- Between making something (a temp dir) and recording it for cleanup, an interruption
  leaves it behind. `held()` keeps a stop request waiting until such a step is complete.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
STOP_SIGNALS = (signal.SIGINT, *SIGNALS)

# sys.monitoring tool ids no one else claims (0-2 and 5 are the debugger, coverage, the
# profiler and the optimizer)
_FREE_TOOL_IDS = (3, 4)


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
    """Route SIGTERM/SIGHUP into `Terminated` and re-raise interruptions a finalizer dropped;
    returns a function restoring the old handlers and hook.

    Outside the main thread (where signals cannot be handled) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {sig: signal.signal(sig, _raise) for sig in SIGNALS}
    previous_hook = sys.unraisablehook
    chained = previous_hook is not _unraisable
    if chained:
        _chained_hooks.append(previous_hook)
        sys.unraisablehook = _unraisable

    def restore() -> None:
        with contextlib.suppress(ValueError):
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if chained:
            with contextlib.suppress(ValueError):
                _chained_hooks.remove(previous_hook)
            if sys.unraisablehook is _unraisable:
                sys.unraisablehook = previous_hook

    return restore


_chained_hooks: list[Callable[[Any], Any]] = []  # the hooks `install()` replaced, innermost last


def _unraisable(unraisable: Any) -> None:
    """sys.unraisablehook: an interruption a finalizer dropped is raised again; anything else
    goes to the hook that was there before."""
    exc = unraisable.exc_value
    if isinstance(exc, KeyboardInterrupt) and _raise_at_next_line(exc):
        return
    (_chained_hooks[-1] if _chained_hooks else sys.__unraisablehook__)(unraisable)


def _raise_at_next_line(exc: KeyboardInterrupt) -> bool:
    """Raise `exc` in the main thread at its next line outside this hook (sys.monitoring: an
    exception a callback raises comes out of the monitored code); inside `held()`, when
    that block ends.

    Called from the unraisable hook, where raising would be dropped again; if that next
    line is another finalizer, the hook comes back here. False when it cannot be done (no
    sys.monitoring, its free tool ids taken, not the main thread).
    """
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None or threading.current_thread() is not threading.main_thread():
        return False
    tool = next((t for t in _FREE_TOOL_IDS if monitoring.get_tool(t) is None), None)
    if tool is None:
        return False
    main = threading.get_ident()
    events = monitoring.events
    kinds = (events.PY_START, events.LINE)

    def fire(code: CodeType, _where: int) -> None:
        global _held_exc
        if threading.get_ident() != main or code in _HOOK_CODES:
            return
        monitoring.set_events(tool, 0)
        for kind in kinds:
            monitoring.register_callback(tool, kind, None)
        monitoring.free_tool_id(tool)
        if _held_depth:
            _held_exc = _held_exc or exc
            return
        raise exc.with_traceback(None)

    monitoring.use_tool_id(tool, "render-rotator stop request")
    for kind in kinds:
        monitoring.register_callback(tool, kind, fire)
    monitoring.set_events(tool, events.PY_START | events.LINE)
    return True


# code that runs between the drop and the raise, where raising would be dropped again
_HOOK_CODES = {_unraisable.__code__, _raise_at_next_line.__code__}

_held_depth = 0
_held_signal: int | None = None  # the first signal that came inside `held()`
_held_exc: KeyboardInterrupt | None = None  # a dropped interruption to raise when it ends


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held_signal
    if _held_signal is None:
        _held_signal = signum


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Inside: Ctrl-C, SIGTERM and SIGHUP wait; the first one then takes effect on leaving,
    through the handler that was in place (so a command still stops cleanly, and a repeat
    that handler ignores stays ignored).

    For steps that must not be cut in two: making a temp dir and recording it for cleanup,
    removing a server and its files. Nested blocks hold until the outermost one ends. In a
    thread other than the main one (which signals never interrupt) it does nothing.
    """
    global _held_depth, _held_signal, _held_exc
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _held_depth == 0
    saved: dict[int, Any] = {}
    _held_depth += 1
    try:
        if outermost:
            _held_signal = None
            for sig in STOP_SIGNALS:
                # noted before it is replaced: a signal raising between two statements here
                # still finds every handler put back
                saved[sig] = signal.getsignal(sig)
                if saved[sig] is not None:  # None: set outside Python, left alone
                    signal.signal(sig, _hold)
        yield
    finally:
        _held_depth -= 1
        if outermost:
            cut: BaseException | None = None
            for signum, handler in saved.items():
                try:
                    if handler is not None:
                        signal.signal(signum, handler)
                except BaseException as exc:  # noqa: BLE001 - a new signal, through it: later
                    cut = cut or exc
            pending, _held_signal = _held_signal, None
            dropped, _held_exc = _held_exc, None
            if cut is not None:
                raise cut
            if dropped is not None:
                raise dropped.with_traceback(None)
            if pending is not None:
                signal.raise_signal(pending)  # now, through the restored handler


_HOOK_CODES.add(held.__wrapped__.__code__)  # type: ignore[attr-defined] # its own end delivers


def exiting() -> None:
    """The command is over and the process ends: Ctrl-C, SIGTERM and SIGHUP are ignored from
    now on, so the cleanups run at exit (atexit: the private directory of password files)
    complete instead of being cut short, or skipped by dying on the spot."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def describe(exc: BaseException) -> str:
    """'interrupted' (Ctrl-C) or 'stopped by SIGTERM'."""
    return f"stopped by {exc.name}" if isinstance(exc, Terminated) else "interrupted"
