"""Logging set-up for the command line: plain lines on stderr, secrets scrubbed from all.

Every record passes through `SecretFilter`, which blanks URL passwords and every secret
registered with `secrets.register` (API keys, database passwords learnt at run time), so a
careless log call elsewhere still cannot print one. The rules live in `render_rotator.secrets`.
"""

from __future__ import annotations

import logging
import sys
import traceback

from render_rotator.secrets import scrub

__all__ = ["SecretFilter", "setup_logging"]


class SecretFilter(logging.Filter):
    """Rewrites each record's final message with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not kill logging
            message = str(record.msg)
        if record.exc_info:
            # the formatter would print the traceback unscrubbed: fold it in, scrubbed
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
            record.exc_text = None
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
