"""Logging set-up for the command line: plain lines on stderr, secrets scrubbed from all.

Every record passes through `SecretFilter`, which blanks URL passwords and every secret
registered with `register_secret` (API keys, database passwords learnt at run time), so a
careless log call elsewhere still cannot print one.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

from render_rotator.postgres.url import scrub_secrets

_secrets: set[str] = set()
_lock = threading.RLock()
_listeners: list[Callable[[str], None]] = []


def register_secret(value: str | None) -> None:
    """Never print `value` again in any log line.

    Listeners (e.g. GitHub Actions' `::add-mask::`) hear each new secret before this returns,
    so nothing the caller prints next can show it unmasked.
    """
    if value and len(value) >= 4:
        with _lock:
            if value in _secrets:
                return
            _secrets.add(value)
            for listener in list(_listeners):
                listener(value)


def on_secret(listener: Callable[[str], None]) -> None:
    """Call `listener(value)` for every secret registered from now on, and for those known.

    Idempotent per listener, so a CLI that sets up twice does not mask twice.
    """
    with _lock:
        if listener in _listeners:
            return
        _listeners.append(listener)
        for value in _secrets:
            listener(value)


def known_secrets() -> list[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def scrub(text: str) -> str:
    """Remove URL passwords and every registered secret from `text`."""
    return scrub_secrets(text, known_secrets())


class SecretFilter(logging.Filter):
    """Rewrites each record's final message with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not kill logging
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True


def setup_logging(verbosity: int = 0) -> None:
    """-q -> warnings only, default -> info, -v -> debug. Idempotent."""
    level = logging.INFO
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity > 0:
        level = logging.DEBUG
    root = logging.getLogger("render_rotator")
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_render_rotator", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    handler.addFilter(SecretFilter())
    handler._render_rotator = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # quiet the HTTP library: our client logs its own retries
    logging.getLogger("httpx").setLevel(logging.WARNING)
