"""Optional chat notifications: one short JSON message to `notify_url` after a rotation.

The body carries both ``text`` (Slack incoming webhooks) and ``content`` (Discord webhooks),
so one URL setting works for either. It says which database, what happened, the new id, its
expiry and the write-freeze window; never a password or connection string: every string goes
through `secrets.scrub` and any URL is cut out entirely. The webhook URL is itself a credential,
so it is registered as a secret and never logged.

A notification is a courtesy: failing to deliver it logs a warning and never fails the
rotation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from render_rotator import secrets
from render_rotator.secrets import scrub

__all__ = ["message_for", "notify", "should_notify"]

log = logging.getLogger("render_rotator.notify")

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_MAX_CHARS = 600  # well under Discord's 2000 and Slack's limits; a chat line, not a log


def _clean(text: Any) -> str:
    """Scrubbed, one line, without any URL (connection strings are URLs)."""
    cleaned = _URL.sub("<url removed>", scrub(str(text)))
    return " ".join(cleaned.split())


def _reports(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if isinstance(report.get("databases"), list):
        return [r for r in report["databases"] if isinstance(r, Mapping)]
    return [report]


def should_notify(report: Mapping[str, Any]) -> bool:
    """Post only when something happened: a rotation or a failure (not a quiet daily no-op)."""
    return any(not r.get("ok", True) or bool(r.get("rotated")) for r in _reports(report))


def _line(r: Mapping[str, Any]) -> str:
    name = _clean(r.get("database") or "database")
    if not r.get("ok", True):
        if "error" in r and "phases" not in r:
            return f"❌ {name}: rotation failed: {_clean(r['error'])}"
        failed = [p.get("name") for p in r.get("phases") or [] if p.get("status") == "failed"]
        where = f" in phase {_clean(failed[-1])}" if failed else ""
        kind = "verification mismatch" if r.get("exit_code") == 3 else "rotation failed"
        old = (r.get("old") or {}).get("id")
        still = f"; {_clean(old)} is still in use" if old and not r.get("rotated") else ""
        detail = f": {_clean(r['message'])}" if r.get("message") else ""
        return f"❌ {name}: {kind}{where}{detail}{still}"
    if r.get("rotated"):
        new = r.get("new") or {}
        parts = [f"✅ {name} rotated to {_clean(new.get('id') or '?')}"]
        if new.get("name"):
            parts[0] += f" ({_clean(new['name'])})"
        parts.append(f"expires {_clean(new.get('expires_at') or 'never')}")
        if isinstance(r.get("freeze_seconds"), int | float):
            parts.append(f"writes frozen {float(r['freeze_seconds']):.1f}s")
        return ", ".join(parts)
    if r.get("dry_run"):
        return f"📝 {name}: dry run, nothing changed"
    return f"💤 {name}: nothing due"


def message_for(report: Mapping[str, Any]) -> str:
    """The chat text for a rotate report, a fleet report or a CLI error payload."""
    text = "render-rotator: " + " | ".join(_line(r) for r in _reports(report))
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS - 1] + "…"
    return text


def notify(
    url: str | None,
    report_or_error: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    only_when_relevant: bool = True,
    client: httpx.Client | None = None,
) -> bool:
    """POST the message to `url`; True when the webhook accepted it. Never raises.

    With `only_when_relevant`, a run that neither rotated nor failed posts nothing.
    """
    if not url:
        return False
    secrets.register(url)
    if only_when_relevant and not should_notify(report_or_error):
        return False
    try:
        text = message_for(report_or_error)
        body = {"text": text, "content": text}
        host = urlsplit(url).hostname or "the webhook"
        if client is not None:
            response = client.post(url, json=body, timeout=timeout)
        else:
            response = httpx.post(url, json=body, timeout=timeout)
    except Exception as exc:  # a notification must never fail the rotation
        log.warning("notification not sent (%s): %s", type(exc).__name__, _clean(exc))
        return False
    if response.status_code >= 400:
        log.warning("notification to %s refused: HTTP %s", host, response.status_code)
        return False
    log.info("notification sent to %s", host)
    return True
