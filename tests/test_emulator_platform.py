"""The emulator's platform rules over real HTTP: service types (maintenance mode only on web
services), deploy bodies recorded and deploy_only as the spec describes it, and Blueprints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from render_rotator.errors import RenderAPIError
from render_rotator.render import RenderClient
from render_rotator.sandbox import Cluster, RenderEmulator
from render_rotator.sandbox.emulator import (
    DEPLOY_ONLY_CONFLICT_MESSAGE,
    DEPLOY_ONLY_NO_BUILD_MESSAGE,
    IN_PROCESS_URL,
    MAINTENANCE_ONLY_WEB_MESSAGE,
    ManualClock,
)


@pytest.fixture(scope="module")
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    e = RenderEmulator(pg, provision_delay=0.1, deploy_delay=0.1, clock=ManualClock())
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def api(emu: RenderEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    transport = httpx.WSGITransport(app=emu.app)
    with httpx.Client(transport=transport, base_url=IN_PROCESS_URL, headers=headers) as client:
        yield client


def _maintenance(api: httpx.Client, sid: str, enabled: bool) -> httpx.Response:
    return api.patch(
        f"/services/{sid}",
        json={"serviceDetails": {"maintenanceMode": {"enabled": enabled, "uri": ""}}},
    )


def _deploy_status(emu: RenderEmulator, api: httpx.Client, sid: str, dep_id: str) -> dict[str, Any]:
    """The deploy once finished: the emulator's clock is moved past its deploy delay."""
    emu.advance_clock(emu.deploy_delay)
    deploy: dict[str, Any] = api.get(f"/services/{sid}/deploys/{dep_id}").json()
    return deploy


# -- service types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["background_worker", "private_service", "cron_job", "static_site"]
)
def test_maintenance_mode_is_refused_for_other_service_types(
    emu: RenderEmulator, api: httpx.Client, kind: str
) -> None:
    sid = emu.add_service(f"svc-{kind}", type=kind)
    service = api.get(f"/services/{sid}").json()
    assert service["type"] == kind
    assert "maintenanceMode" not in service["serviceDetails"]
    for enabled in (True, False):
        answer = _maintenance(api, sid, enabled)
        assert answer.status_code == 400
        assert answer.json()["message"] == MAINTENANCE_ONLY_WEB_MESSAGE
    # Render's 400 reaches the client as a typed error carrying its words
    with (
        RenderClient(
            api_key=emu.api_key,
            base_url=IN_PROCESS_URL,
            transport=httpx.WSGITransport(app=emu.app),
        ) as client,
        pytest.raises(RenderAPIError, match="only supported for web services") as info,
    ):
        client.set_maintenance_mode(sid, True)
    assert info.value.status_code == 400
    # suspending works for every type
    assert api.post(f"/services/{sid}/suspend").status_code == 202
    assert api.get(f"/services/{sid}").json()["suspended"] == "suspended"
    assert api.post(f"/services/{sid}/resume").status_code == 202


def test_web_services_keep_maintenance_mode_and_types_filter_the_list(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    owner = emu.add_owner("types")
    web = emu.add_service("web", owner)
    worker = emu.add_service("worker", owner, type="background_worker")
    assert _maintenance(api, web, True).status_code == 200
    assert _maintenance(api, web, False).status_code == 200
    listed = api.get("/services", params={"ownerId": owner, "type": "background_worker"}).json()
    assert [item["service"]["id"] for item in listed] == [worker]
    assert emu.state_snapshot()["services"][worker]["type"] == "background_worker"
    with pytest.raises(ValueError, match="service type must be one of"):
        emu.add_service("bad", owner, type="worker")


# -- deploys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo", [None, "https://github.com/acme/app"])
def test_deploy_only_ships_the_last_build_without_building(
    emu: RenderEmulator, api: httpx.Client, repo: str | None
) -> None:
    sid = emu.add_service("web", repo=repo)
    [first] = emu.deploys(sid)
    built = api.post(f"/services/{sid}/deploys", json={})
    assert built.status_code == 201
    built_deploy = _deploy_status(emu, api, sid, built.json()["id"])
    assert built_deploy["status"] == "live"
    again = api.post(f"/services/{sid}/deploys", json={"deployMode": "deploy_only"})
    assert again.status_code == 201
    body = again.json()
    assert body["status"] == "update_in_progress"  # no build_in_progress: nothing is built
    final = _deploy_status(emu, api, sid, body["id"])
    assert final["status"] == "live"
    if repo:  # the same commit as the last build; a default deploy builds a new one
        assert final["commit"]["id"] == built_deploy["commit"]["id"]
        assert built_deploy["commit"]["id"] != first["commit"]["id"]
    else:
        assert final["image"] == built_deploy["image"]
    assert emu.deploy_requests(sid) == [{}, {"deployMode": "deploy_only"}]


@pytest.mark.parametrize(
    "extra",
    [{"commitId": "abc123"}, {"imageUrl": "docker.io/library/nginx:1"},
     {"clearCache": "clear"}, {"clearCache": "do_not_clear"}],
)  # fmt: skip
def test_deploy_only_with_a_build_field_is_a_400(
    emu: RenderEmulator, api: httpx.Client, extra: dict[str, str]
) -> None:
    sid = emu.add_service("web")
    body = {"deployMode": "deploy_only", **extra}
    answer = api.post(f"/services/{sid}/deploys", json=body)
    assert answer.status_code == 400
    assert answer.json()["message"] == DEPLOY_ONLY_CONFLICT_MESSAGE
    assert len(emu.deploys(sid)) == 1  # nothing started
    assert emu.deploy_requests(sid) == [body]  # refused bodies are recorded too
    assert api.post(f"/services/{sid}/deploys", json={"deployMode": "fast"}).status_code == 400


def test_deploy_only_without_a_successful_build_is_a_400(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    sid = emu.add_service(
        "broken", repo="https://github.com/acme/app", initial_deploy="build_failed"
    )
    answer = api.post(f"/services/{sid}/deploys", json={"deployMode": "deploy_only"})
    assert answer.status_code == 400
    assert answer.json()["message"] == DEPLOY_ONLY_NO_BUILD_MESSAGE
    assert [d["status"] for d in emu.deploys(sid)] == ["build_failed"]
    # a build that succeeded but failed to go live still counts as a build to ship
    emu.faults.fail_next_deploy(sid, status="update_failed")
    failed = api.post(f"/services/{sid}/deploys", json={})
    assert _deploy_status(emu, api, sid, failed.json()["id"])["status"] == "update_failed"
    assert (
        api.post(f"/services/{sid}/deploys", json={"deployMode": "deploy_only"}).status_code == 201
    )


# -- blueprints -----------------------------------------------------------------------------------


def test_blueprints_list_and_resources(emu: RenderEmulator, api: httpx.Client) -> None:
    owner = emu.add_owner("bp")
    other = emu.add_owner("bp-other")
    web = emu.add_service("shop-web", owner)
    worker = emu.add_service("shop-worker", owner, type="background_worker")
    group = emu.add_env_group("shop-env", owner)
    pg = emu.create_postgres(name="shop-db", ownerId=owner, plan="free", version="18")
    bp = emu.add_blueprint("shop", owner, [pg["id"], web])
    emu.manage_with_blueprint(bp, group)
    emu.add_blueprint("elsewhere", other, [])
    listed = api.get("/blueprints", params={"ownerId": owner}).json()
    assert [item["blueprint"]["id"] for item in listed] == [bp]
    assert "resources" not in listed[0]["blueprint"] and listed[0]["cursor"]
    detail = api.get(f"/blueprints/{bp}").json()
    assert detail["path"] == "render.yaml" and detail["autoSync"] is True
    assert detail["resources"] == [
        {"id": pg["id"], "name": "shop-db", "type": "postgres"},
        {"id": web, "name": "shop-web", "type": "web_service"},
        {"id": group, "name": "shop-env", "type": "environment_group"},
    ]
    emu.manage_with_blueprint(bp, worker)
    assert api.get(f"/blueprints/{bp}").json()["resources"][-1]["type"] == "background_worker"
    emu.delete_postgres(pg["id"])  # a deleted resource is no longer listed
    assert pg["id"] not in [r["id"] for r in api.get(f"/blueprints/{bp}").json()["resources"]]
    assert len(api.get("/blueprints").json()) >= 2
    assert api.get("/blueprints/exs-00000000000000000000").status_code == 404
    with pytest.raises(ValueError, match="unknown resource"):
        emu.manage_with_blueprint(bp, "srv-nope")


# -- an injected refusal --------------------------------------------------------------------------


def test_client_error_fault_refuses_matching_requests_with_renders_body(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    sid = emu.add_service("web")
    emu.faults.apply(
        {"fault": "client_error", "n": 1, "status": 400, "message": "no thanks",
         "path_prefix": f"/services/{sid}/deploys", "method": "POST"}
    )  # fmt: skip
    assert api.get(f"/services/{sid}/deploys").status_code == 200  # other methods pass
    refused = api.post(f"/services/{sid}/deploys", json={})
    assert refused.status_code == 400 and refused.json()["message"] == "no thanks"
    assert emu.deploy_requests(sid) == [] and len(emu.deploys(sid)) == 1
    assert api.post(f"/services/{sid}/deploys", json={}).status_code == 201  # n=1: used up
    for status in (429, 500, 302):
        with pytest.raises(ValueError, match="4xx"):
            emu.faults.client_error(status=status)
