"""Stop requests are never lost: one a finalizer swallowed is raised again at the next line,
and one arriving inside `held()` waits for the block to end.

Each case runs in its own interpreter: signal handlers and sys.unraisablehook belong to the
whole process (the test runner's own must stay as they are).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.rotation_support import REPO


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# the handler raises inside a weakref callback (as it did inside the import system's
# `KeyedRef.remove` while a command imported its modules): Python drops such exceptions
FINALIZER_SCRIPT = """
    import os, signal, weakref
    from render_rotator import stopping

    stopping.install()
    steps = []

    class Box:
        pass

    def finalizer(_ref):
        os.kill(os.getpid(), signal.{sig})  # its handler runs here, inside the callback

    box = Box()
    ref = weakref.ref(box, finalizer)
    try:
        del box
        steps.append("the next line")
        steps.append("the line after")
    except KeyboardInterrupt as exc:
        print(type(exc).__name__, stopping.describe(exc), "after", steps)
    else:
        print("not stopped; ran", steps)
"""


@pytest.mark.parametrize(
    ("sig", "expected"),
    [("SIGTERM", "Terminated stopped by SIGTERM"), ("SIGINT", "KeyboardInterrupt interrupted")],
)
def test_a_stop_request_a_finalizer_swallowed_is_raised_at_the_next_line(
    sig: str, expected: str
) -> None:
    result = _run(FINALIZER_SCRIPT.format(sig=sig))
    assert result.stdout.strip() == f"{expected} after []", result.stdout + result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


def test_other_unraisable_exceptions_still_reach_the_previous_hook() -> None:
    result = _run(
        """
        import sys
        from render_rotator import stopping

        seen = []
        sys.unraisablehook = lambda u: seen.append(type(u.exc_value).__name__)
        restore = stopping.install()

        class Broken:
            def __del__(self):
                raise ValueError("in a finalizer")

        Broken()
        restore()
        print(seen, sys.unraisablehook is not stopping._unraisable)
        """
    )
    assert result.stdout.strip() == "['ValueError'] True", result.stdout + result.stderr


def test_a_swallowed_stop_inside_held_waits_for_the_block_to_end() -> None:
    result = _run(
        """
        import signal, weakref
        from render_rotator import stopping

        stopping.install()
        steps = []

        class Box:
            pass

        def finalizer(_ref):  # as if a stop request had been raised in here
            raise stopping.Terminated(signal.SIGTERM)

        box = Box()
        ref = weakref.ref(box, finalizer)
        try:
            with stopping.held():
                del box
                steps.append("made")
                steps.append("recorded")
            steps.append("after the block")
        except KeyboardInterrupt as exc:
            print(stopping.describe(exc), steps)
        """
    )
    assert result.stdout == "stopped by SIGTERM ['made', 'recorded']\n", result.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_inside_held_takes_effect_when_the_block_ends(sig: str) -> None:
    result = _run(
        f"""
        import os, signal
        from render_rotator import stopping

        stopping.install()
        steps = []
        try:
            with stopping.held():
                with stopping.held():  # nested: only the outermost block delivers
                    os.kill(os.getpid(), signal.{sig})
                    steps.append("inner done")
                os.kill(os.getpid(), signal.{sig})  # a repeat inside the block: one stop
                steps.append("outer done")
            steps.append("after the block")
        except KeyboardInterrupt as exc:
            print(stopping.describe(exc), steps)
        print("handler", signal.getsignal(signal.{sig}) is not stopping._hold)
        """
    )
    stop = "interrupted" if sig == "SIGINT" else f"stopped by {sig}"
    assert result.stdout.splitlines() == [
        f"{stop} ['inner done', 'outer done']",
        "handler True",
    ], result.stdout + result.stderr


def test_without_install_held_delivers_through_the_default_handler() -> None:
    """A library user's process: SIGTERM's default still ends it, only after the step."""
    result = _run(
        """
        import os, signal, sys
        from render_rotator import stopping

        with stopping.held():
            os.kill(os.getpid(), signal.SIGTERM)
            print("step completed", flush=True)
        print("not reached")
        """
    )
    assert result.returncode == -signal.SIGTERM
    assert result.stdout == "step completed\n"
