"""Notifications: the POSTed body (captured with respx) is Slack/Discord-shaped, short, and
holds no secret; delivery failures never raise."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from render_rotator import notify, secrets
from tests.sample_report import REPORT, random_secret

HOOK = "https://hooks.example.test/services/T000/B000/tokentokentoken"


@respx.mock
def test_notify_posts_slack_and_discord_text_without_secrets() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    password = random_secret()
    secrets.register(password)
    report = {
        **REPORT,
        "message": f"done; postgresql://u:{password}@dpg-new-a.oregon-postgres.render.com/db",
    }
    assert notify.notify(HOOK, report) is True
    body = json.loads(route.calls.last.request.content)
    assert set(body) == {"text", "content"} and body["text"] == body["content"]
    assert body["text"] == (
        "render-rotator: ✅ myapp-db rotated to dpg-new-a (myapp-db-20250125), "
        "expires 2025-02-24T10:00:00+00:00, writes frozen 12.3s"
    )
    raw = route.calls.last.request.content.decode()
    assert password not in raw and "postgresql://" not in raw


@respx.mock
def test_notify_on_failure_and_error_payloads() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(204))
    password = random_secret()
    secrets.register(password)
    failed = {
        **REPORT,
        "ok": False,
        "rotated": False,
        "new": None,
        "exit_code": 1,
        "phases": [{"name": "copy", "status": "failed", "seconds": 2}],
        "message": f"pg_restore failed for postgresql://u:{password}@h/db",
    }
    assert notify.notify(HOOK, failed) is True
    text = json.loads(route.calls.last.request.content)["text"]
    assert text.startswith("render-rotator: ❌ myapp-db: rotation failed in phase copy")
    assert "dpg-old-a is still in use" in text
    assert password not in text and "postgresql" not in text
    error = {"ok": False, "exit_code": 2, "error": f"bad config near {password}"}
    assert notify.notify(HOOK, error) is True
    text = json.loads(route.calls.last.request.content)["text"]
    assert "rotation failed: bad config near ***" in text


@respx.mock
def test_notify_skips_quiet_days_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    route = respx.post(HOOK)
    assert notify.notify(HOOK, {"ok": True, "rotated": False, "due": False}) is False
    assert notify.notify(None, REPORT) is False
    assert route.call_count == 0
    route.mock(return_value=httpx.Response(500))
    with caplog.at_level(logging.WARNING, logger="render_rotator"):
        assert notify.notify(HOOK, REPORT) is False
    route.mock(side_effect=httpx.ConnectError("no route to " + HOOK))
    with caplog.at_level(logging.WARNING, logger="render_rotator"):
        assert notify.notify(HOOK, REPORT) is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP 500" in m for m in messages)
    assert any("ConnectError" in m for m in messages)
    assert all("tokentokentoken" not in secrets.scrub(m) for m in messages)
    assert all("tokentokentoken" not in m for m in messages)


def test_long_fleet_messages_are_cut() -> None:
    fleet = {"databases": [{**REPORT, "database": f"db-{i}"} for i in range(30)]}
    assert len(notify.message_for(fleet)) <= 600
