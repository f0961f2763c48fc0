"""The emulator's clock and its WSGI serving: a manual clock that only moves when told, the
same app in-process and on the standard library's server, and bodies without a length."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from render_rotator.sandbox import Cluster, RenderEmulator
from render_rotator.sandbox.emulator import IN_PROCESS_URL, ManualClock, SystemClock


@pytest.fixture
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    e = RenderEmulator(pg, provision_delay=5, deploy_delay=5, clock=ManualClock())
    try:
        yield e
    finally:
        e.stop()


def _api(emu: RenderEmulator) -> httpx.Client:
    return httpx.Client(
        transport=httpx.WSGITransport(app=emu.app),
        base_url=IN_PROCESS_URL,
        headers={"Authorization": f"Bearer {emu.api_key}"},
    )


# -- clocks ------------------------------------------------------------------------------------


def test_a_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start=1000.0)
    assert clock.time() == clock.time() == 1000.0
    clock.advance(2.5)
    clock.sleep(0.5)  # sleeping is moving on, at once
    assert clock.time() == 1003.0
    clock.sleep(-1)  # a negative sleep is no sleep
    assert clock.time() == 1003.0
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


def test_the_system_clock_follows_the_wall_clock_plus_what_was_advanced() -> None:
    clock = SystemClock()
    assert abs(clock.time() - time.time()) < 5
    clock.advance(86400)
    assert clock.time() - time.time() > 86400 - 5
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


def test_statuses_move_with_the_manual_clock_not_the_wall_clock(emu: RenderEmulator) -> None:
    sid = emu.add_service("web")
    with _api(emu) as api:
        created = api.post(
            "/postgres",
            json={"name": "db", "ownerId": emu.default_owner_id, "plan": "free", "version": "18"},
        ).json()
        deploy = api.post(f"/services/{sid}/deploys", json={}).json()
        assert api.get(f"/postgres/{created['id']}").json()["status"] == "creating"
        emu.advance_clock(4.9)
        assert api.get(f"/postgres/{created['id']}").json()["status"] == "creating"
        assert api.get(f"/services/{sid}/deploys/{deploy['id']}").json()["status"] != "live"
        emu.advance_clock(0.2)
        assert api.get(f"/postgres/{created['id']}").json()["status"] == "available"
        assert api.get(f"/services/{sid}/deploys/{deploy['id']}").json()["status"] == "live"


def test_waiting_on_a_manual_clock_times_out_without_waiting(emu: RenderEmulator) -> None:
    emu.faults.never_available(True)
    created = emu.create_postgres(name="stuck", plan="free", version="18")
    before = emu.now()
    with pytest.raises(TimeoutError, match="still 'creating' after 60s"):
        emu.wait_for_postgres(created["id"], timeout=60)  # a minute, on the emulator's clock
    assert emu.now() - before >= 60


# -- serving -----------------------------------------------------------------------------------


def test_in_process_and_on_a_socket_the_answers_are_the_same(emu: RenderEmulator) -> None:
    emu.start()
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with _api(emu) as inproc, httpx.Client(base_url=emu.base_url, headers=headers) as real:
        answers = [client.get("/owners") for client in (inproc, real)]
        missing = [client.get("/postgres/dpg-nope-a") for client in (inproc, real)]
        refused = [client.put("/postgres") for client in (inproc, real)]
    assert answers[0].json() == answers[1].json() and answers[0].status_code == 200
    assert [r.json() for r in missing] == [{"message": "not found: dpg-nope-a"}] * 2
    assert [r.status_code for r in refused] == [405, 405]
    assert refused[0].headers["Allow"] == refused[1].headers["Allow"] == "GET, POST"
    for response in answers + missing + refused:
        assert response.headers["Render-Request-Id"].startswith("api-")
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_a_body_without_a_length_is_refused_over_a_socket(emu: RenderEmulator) -> None:
    emu.start()
    headers = {"Authorization": f"Bearer {emu.api_key}"}

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "db", "plan": "free", '
        yield b'"version": "18", "ownerId": "' + (emu.default_owner_id or "").encode() + b'"}'

    with httpx.Client(base_url=emu.base_url, headers=headers) as api:
        response = api.post("/postgres", content=chunks())
        assert response.status_code == 411
        assert "Content-Length" in response.json()["message"]
        assert set(response.json()) == {"id", "message"}
        assert response.headers["Render-Request-Id"].startswith("api-")
        assert response.headers["Server"] == "render-emulator"
        assert emu.postgres_ids() == []  # nothing was created
        # the same body with its length is taken
        body = b"".join(chunks())
        assert api.post("/postgres", content=body).status_code == 201


def test_env_var_keys_are_percent_decoded_once(emu: RenderEmulator) -> None:
    sid = emu.add_service("web", env_vars={"A KEY": "x", "KEY%41": "literal"})
    with _api(emu) as api:
        assert api.get(f"/services/{sid}/env-vars/A%20KEY").json() == {"key": "A KEY", "value": "x"}
        literal = api.get(f"/services/{sid}/env-vars/KEY%2541").json()
        assert literal == {"key": "KEY%41", "value": "literal"}
