"""A wrong RENDER_API_URL fails in seconds naming the URL; timeouts and 5xx keep retrying."""

from __future__ import annotations

import socket

import httpx
import pytest

from render_rotator.errors import APITimeoutError, ServerError
from render_rotator.render import RenderClient
from render_rotator.render.client import UNREACHABLE_RETRY_TIME


class FakeTime:
    """A clock that moves only when the client sleeps between retries."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on exit: nothing listens there


def _client(fake: FakeTime, base_url: str, **kwargs: object) -> RenderClient:
    return RenderClient(
        "rnd_test", base_url, max_retry_time=120.0, sleep=fake.sleep, clock=fake.clock, **kwargs
    )


def test_connection_refused_fails_within_seconds_naming_the_url() -> None:
    fake = FakeTime()
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with _client(fake, url) as client, pytest.raises(APITimeoutError) as info:
        client.list_owners()
    message = str(info.value)
    assert url in message and "connection refused" in message
    assert "RENDER_API_URL" in message  # the hint says what to check
    assert 0 < fake.now <= UNREACHABLE_RETRY_TIME  # a short retry, not two minutes


def _raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


def test_a_connect_timeout_keeps_the_full_retry_budget() -> None:
    fake = FakeTime()
    transport = _raising(httpx.ConnectTimeout("timed out"))
    with (
        _client(fake, "https://api.render.test/v1", transport=transport) as client,
        pytest.raises(APITimeoutError),
    ):
        client.list_owners()
    assert fake.now > 60


def test_a_5xx_keeps_the_full_retry_budget() -> None:
    fake = FakeTime()
    transport = httpx.MockTransport(lambda request: httpx.Response(503, json={"message": "busy"}))
    with (
        _client(fake, "https://api.render.test/v1", transport=transport) as client,
        pytest.raises(ServerError),
    ):
        client.list_owners()
    assert fake.now > 60
