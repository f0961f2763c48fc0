"""RenderClient's HTTP details for deploy modes, service types and Blueprints, against respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from render_rotator.errors import NotFoundError, UsageError
from render_rotator.render import Blueprint, RenderClient, Service

BASE = "https://api.render.test/v1"
OWNER = "tea-owner1"
BP_ID = "exs-cph1rs3idesc73a2b2mg"


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    router = respx.MockRouter(base_url=BASE, assert_all_called=False)
    with router:
        yield router


@pytest.fixture
def client(api: respx.MockRouter) -> Iterator[RenderClient]:
    with RenderClient(
        "rnd_key", BASE, sleep=lambda s: None, transport=httpx.MockTransport(api.handler)
    ) as c:
        yield c


def sent(route: respx.Route, index: int = -1) -> Any:
    request = route.calls[index].request
    return json.loads(request.content) if request.content else None


def deploy_body(dep_id: str = "dep-1", status: str = "update_in_progress") -> dict[str, Any]:
    return {"id": dep_id, "commit": None, "status": status, "trigger": "api",
            "createdAt": "2026-01-02T03:04:05.000000Z"}  # fmt: skip


def blueprint_body(with_resources: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": BP_ID,
        "name": "shop",
        "status": "in_sync",
        "autoSync": True,
        "repo": "https://github.com/acme/shop",
        "branch": "main",
        "path": "render.yaml",
        "lastSync": "2026-01-02T03:04:05Z",
    }
    if with_resources:
        body["resources"] = [
            {"id": "dpg-abc-a", "name": "shop-db", "type": "postgres"},
            {"id": "srv-web", "name": "shop-web", "type": "web_service"},
            {"id": "evg-env", "name": "shop-env", "type": "environment_group"},
        ]
    return body


# -- deploys ------------------------------------------------------------------------------------


def test_trigger_deploy_deploy_only_sends_the_mode_alone(
    api: respx.MockRouter, client: RenderClient
) -> None:
    route = api.post("/services/srv-1/deploys").respond(201, json=deploy_body())
    deploy = client.trigger_deploy("srv-1", deploy_mode="deploy_only")
    assert deploy is not None and deploy.id == "dep-1"
    assert sent(route) == {"deployMode": "deploy_only"}
    client.trigger_deploy("srv-1", deploy_mode="build_and_deploy")
    assert sent(route) == {"deployMode": "build_and_deploy"}
    client.trigger_deploy("srv-1")  # the contract's signature: Render's default, no mode
    assert sent(route) == {}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"deploy_mode": "deploy_only", "clear_cache": True}, "cannot be combined"),
        ({"deploy_mode": "deploy-only"}, "deploy_mode must be one of deploy_only"),
    ],
)
def test_trigger_deploy_refuses_what_render_would_refuse_before_sending(
    api: respx.MockRouter, client: RenderClient, kwargs: dict[str, Any], needle: str
) -> None:
    route = api.post("/services/srv-1/deploys").respond(201, json=deploy_body())
    with pytest.raises(UsageError, match=needle):
        client.trigger_deploy("srv-1", **kwargs)
    assert route.call_count == 0


def test_list_deploys_filters_by_status_on_renders_side(
    api: respx.MockRouter, client: RenderClient
) -> None:
    route = api.get("/services/srv-1/deploys").respond(
        200, json=[{"cursor": "c1", "deploy": deploy_body("dep-9", "live")}]
    )
    [deploy] = client.list_deploys("srv-1", limit=1, statuses=["live", "deactivated"])
    assert deploy.id == "dep-9"
    params = route.calls.last.request.url.params
    assert params.get_list("status") == ["live", "deactivated"]
    assert params["limit"] == "1"
    client.list_deploys("srv-1", limit=2)
    assert "status" not in route.calls.last.request.url.params


# -- service types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_type", "maintenance"),
    [
        ("web_service", True),
        ("background_worker", False),
        ("private_service", False),
        ("cron_job", False),
        ("static_site", False),
    ],
)
def test_service_type_says_whether_maintenance_mode_exists(
    service_type: str, maintenance: bool
) -> None:
    service = Service.from_api({"id": "srv-1", "type": service_type, "serviceDetails": {}})
    assert service.type == service_type
    assert service.has_maintenance_mode is maintenance


# -- blueprints ----------------------------------------------------------------------------------


def test_list_blueprints_follows_cursors_and_filters_by_owner(
    api: respx.MockRouter, client: RenderClient
) -> None:
    first = [{"cursor": f"c{i}", "blueprint": {**blueprint_body(False), "id": f"exs-{i:020d}"}}
             for i in range(100)]  # fmt: skip
    second = [{"cursor": "last", "blueprint": blueprint_body(False)}]
    route = api.get("/blueprints").mock(
        side_effect=lambda request: httpx.Response(
            200, json=second if "cursor" in request.url.params else first
        )
    )
    blueprints = client.list_blueprints(owner_id=OWNER)
    assert len(blueprints) == 101 and blueprints[-1].id == BP_ID
    assert all(isinstance(b, Blueprint) and b.resources == () for b in blueprints)
    assert route.calls[0].request.url.params["ownerId"] == OWNER
    assert route.calls[1].request.url.params["cursor"] == "c99"
    client.list_blueprints()
    assert "ownerId" not in route.calls.last.request.url.params


def test_get_blueprint_reads_its_resources(api: respx.MockRouter, client: RenderClient) -> None:
    api.get(f"/blueprints/{BP_ID}").respond(200, json=blueprint_body())
    blueprint = client.get_blueprint(BP_ID)
    assert (blueprint.name, blueprint.path, blueprint.auto_sync) == ("shop", "render.yaml", True)
    assert blueprint.repo == "https://github.com/acme/shop" and blueprint.branch == "main"
    assert blueprint.last_sync is not None and blueprint.status == "in_sync"
    assert [r.type for r in blueprint.resources] == ["postgres", "web_service", "environment_group"]
    managed = blueprint.manages("dpg-abc-a")
    assert managed is not None and managed.name == "shop-db"
    assert blueprint.manages("dpg-other-a") is None


def test_get_blueprint_404_is_not_found(api: respx.MockRouter, client: RenderClient) -> None:
    api.get(f"/blueprints/{BP_ID}").respond(404, json={"message": f"not found: {BP_ID}"})
    with pytest.raises(NotFoundError, match="not found"):
        client.get_blueprint(BP_ID)
