"""Replay Render's real recorded answers through the client.

Every recorded interaction on a path the client uses is served back by respx exactly as Render
sent it (status, headers, body) and the matching client method must turn it into the right typed
result. Every other recorded path must be listed as unused, so a new cassette with a path the
client starts to need cannot slip by.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from recorded import load_interactions, recorded_dir, require_shared

from render_rotator.render import (
    ConnectionInfo,
    Deploy,
    DeployStatus,
    EnvGroup,
    EnvVar,
    Postgres,
    PostgresStatus,
    RenderClient,
    Service,
)

BASE = "https://api.render.test/v1"
KEY = "rnd_recorded_test_key"

require_shared(recorded_dir(), module=True)

INTERACTIONS = load_interactions()

# Recorded paths the client never calls (Terraform's own bookkeeping, bulk env-var replace,
# service/env-group creation and deletion, secret files, logs, projects, ...).
UNUSED = [
    ("POST", r"/projects"),
    ("GET|DELETE", r"/projects/[^/]+"),
    ("GET", r"/environments/[^/]+"),
    ("POST|DELETE", r"/environments/[^/]+/resources"),
    ("GET|PUT|DELETE", r"/logs/streams/resource/[^/]+"),
    ("POST", r"/services"),
    ("DELETE", r"/services/[^/]+"),
    ("PUT", r"/services/[^/]+/env-vars"),  # replaces ALL env vars: never used on purpose
    ("GET|PUT", r"/services/[^/]+/secret-files"),
    ("GET", r"/services/[^/]+/custom-domains"),
    ("GET|PATCH", r"/notification-settings/overrides/services/[^/]+"),
    ("POST", r"/env-groups"),
    ("PATCH|DELETE", r"/env-groups/[^/]+"),
    ("PUT|DELETE", r"/env-groups/[^/]+/secret-files/[^/]+"),
]


def _response(item: dict[str, Any]) -> httpx.Response:
    headers = {k: v for k, v in item["headers"].items() if k.lower() != "content-length"}
    return httpx.Response(item["status"], headers=headers, content=item["body_text"].encode())


def _sent_json(route: respx.Route) -> Any:
    content = route.calls.last.request.content
    return json.loads(content) if content else None


def _last_get_service(item: dict[str, Any]) -> dict[str, Any]:
    """The recorded GET of the same service, to serve set_maintenance_mode's read."""
    for other in INTERACTIONS:
        if (
            other["cassette"] == item["cassette"]
            and other["method"] == "GET"
            and other["path"] == item["path"]
            and other["status"] == 200
        ):
            return other
    raise AssertionError(f"no recorded GET {item['path']}")


# -- one checker per client call: (method, path regex) -> check(client, mock, item) -------------

Check = Callable[[RenderClient, respx.MockRouter, dict[str, Any]], None]


def check_get_postgres(client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]) -> None:
    mock.get(item["path"]).mock(return_value=_response(item))
    pg = client.get_postgres(item["path"].rsplit("/", 1)[1])
    _assert_postgres(pg, item["body"])


def check_create_postgres(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    sent = item["request_body"]
    listing = mock.get("/postgres").mock(return_value=httpx.Response(200, json=[]))
    create = mock.post("/postgres").mock(return_value=_response(item))
    pg = client.create_postgres(**sent)
    assert _sent_json(create) == sent  # camelCase keys pass through untouched
    assert listing.call_count == 1  # only the pre-check: no retry happened
    _assert_postgres(pg, item["body"])


def check_update_postgres(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    route = mock.patch(item["path"]).mock(return_value=_response(item))
    pg = client.update_postgres(item["path"].rsplit("/", 1)[1], **item["request_body"])
    assert _sent_json(route) == item["request_body"]
    _assert_postgres(pg, item["body"])


def check_delete_postgres(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    route = mock.delete(item["path"]).mock(return_value=_response(item))
    client.delete_postgres(item["path"].rsplit("/", 1)[1])
    assert route.call_count == 1 and item["status"] == 204


def check_connection_info(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    mock.get(item["path"]).mock(return_value=_response(item))
    info = client.get_connection_info(item["path"].split("/")[2])
    assert isinstance(info, ConnectionInfo)
    body = item["body"]
    assert info.password == body["password"]
    assert info.internal_connection_string == body["internalConnectionString"]
    assert info.external_connection_string == body["externalConnectionString"]
    assert "PGPASSWORD" in body["psqlCommand"]  # Render sends a shell line with the password
    assert not hasattr(info, "psql_command")  # ... which the client does not keep
    text = repr(info)
    assert body["password"] not in text
    url_password = body["internalConnectionString"].split(":")[2].split("@")[0]
    assert url_password not in text


def check_get_service(client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]) -> None:
    mock.get(item["path"]).mock(return_value=_response(item))
    service = client.get_service(item["path"].rsplit("/", 1)[1])
    _assert_service(service, item["body"])


def check_list_services(client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]) -> None:
    route = mock.get("/services").mock(return_value=_response(item))
    services = client.list_services(name=item["query"]["name"], owner_id=item["query"]["ownerId"])
    params = route.calls.last.request.url.params
    assert params["name"] == item["query"]["name"]
    assert params["ownerId"] == item["query"]["ownerId"]
    assert len(services) == len(item["body"])
    for service, entry in zip(services, item["body"], strict=True):
        _assert_service(service, entry["service"])


def check_set_maintenance_mode(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    mock.get(item["path"]).mock(return_value=_response(_last_get_service(item)))
    route = mock.patch(item["path"]).mock(return_value=_response(item))
    recorded_mode = item["request_body"]["serviceDetails"]["maintenanceMode"]
    service = client.set_maintenance_mode(
        item["path"].rsplit("/", 1)[1], enabled=recorded_mode["enabled"]
    )
    assert _sent_json(route) == {"serviceDetails": {"maintenanceMode": recorded_mode}}
    _assert_service(service, item["body"])


def check_list_env_vars(client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]) -> None:
    route = mock.get(item["path"]).mock(return_value=_response(item))
    env_vars = client.list_env_vars(item["path"].split("/")[2])
    assert route.call_count == 1  # a recorded page shorter than the limit is the last one
    assert env_vars == [EnvVar(e["envVar"]["key"], e["envVar"]["value"]) for e in item["body"]]


def check_trigger_deploy(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    route = mock.post(item["path"]).mock(return_value=_response(item))
    deploy = client.trigger_deploy(item["path"].split("/")[2])
    assert _sent_json(route) == item["request_body"]
    assert isinstance(deploy, Deploy)
    assert deploy.id == item["body"]["id"]
    assert deploy.status == DeployStatus(item["body"]["status"])
    assert deploy.trigger == item["body"]["trigger"]
    assert deploy.finished_at is None and deploy.created_at is not None


def check_get_env_group(client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]) -> None:
    mock.get(item["path"]).mock(return_value=_response(item))
    group = client.get_env_group(item["path"].rsplit("/", 1)[1])
    _assert_env_group(group, item["body"])


def check_set_env_group_var(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    route = mock.put(item["path"]).mock(return_value=_response(item))
    _, _, group_id, _, key = item["path"].split("/")
    value = item["request_body"]["value"]
    group = client.set_env_group_var(group_id, key, value)
    assert _sent_json(route) == {"value": value}
    _assert_env_group(group, item["body"])
    assert group.get(key) == value


def check_delete_env_group_var(
    client: RenderClient, mock: respx.MockRouter, item: dict[str, Any]
) -> None:
    route = mock.delete(item["path"]).mock(return_value=_response(item))
    _, _, group_id, _, key = item["path"].split("/")
    client.delete_env_group_var(group_id, key)
    assert route.call_count == 1


CHECKS: list[tuple[str, str, Check]] = [
    ("GET", r"/postgres/[^/]+", check_get_postgres),
    ("POST", r"/postgres", check_create_postgres),
    ("PATCH", r"/postgres/[^/]+", check_update_postgres),
    ("DELETE", r"/postgres/[^/]+", check_delete_postgres),
    ("GET", r"/postgres/[^/]+/connection-info", check_connection_info),
    ("GET", r"/services/[^/]+", check_get_service),
    ("GET", r"/services", check_list_services),
    ("PATCH", r"/services/[^/]+", check_set_maintenance_mode),
    ("GET", r"/services/[^/]+/env-vars", check_list_env_vars),
    ("POST", r"/services/[^/]+/deploys", check_trigger_deploy),
    ("GET", r"/env-groups/[^/]+", check_get_env_group),
    ("PUT", r"/env-groups/[^/]+/env-vars/[^/]+", check_set_env_group_var),
    ("DELETE", r"/env-groups/[^/]+/env-vars/[^/]+", check_delete_env_group_var),
]


def _find(table: list[tuple[str, str, Check]], item: dict[str, Any]) -> Check | None:
    for methods, pattern, check in table:
        if re.fullmatch(methods, item["method"]) and re.fullmatch(pattern, item["path"]):
            return check
    return None


def _is_unused(item: dict[str, Any]) -> bool:
    return any(
        re.fullmatch(methods, item["method"]) and re.fullmatch(pattern, item["path"])
        for methods, pattern in UNUSED
    )


def _assert_postgres(pg: Postgres, body: dict[str, Any]) -> None:
    assert isinstance(pg, Postgres)
    assert pg.id == body["id"]
    assert pg.name == body["name"]
    assert pg.status == PostgresStatus(body["status"]) and pg.status_raw == body["status"]
    assert pg.plan == body["plan"]
    assert pg.version == body["version"]
    assert pg.region == body["region"]
    assert pg.owner_id == body["owner"]["id"]
    assert pg.database_name == body["databaseName"]
    assert pg.database_user == body["databaseUser"]
    assert pg.disk_size_gb == body.get("diskSizeGB")
    assert pg.environment_id == body.get("environmentId")
    assert len(pg.ip_allow_list) == len(body["ipAllowList"] or [])
    assert pg.created_at is not None and pg.created_at.tzinfo is not None
    assert (pg.expires_at is None) == ("expiresAt" not in body)


def _assert_service(service: Service, body: dict[str, Any]) -> None:
    assert isinstance(service, Service)
    assert service.id == body["id"]
    assert service.name == body["name"]
    assert service.type == body["type"]
    assert service.owner_id == body["ownerId"]
    assert service.suspended is (body["suspended"] == "suspended")
    mode = body["serviceDetails"]["maintenanceMode"]
    assert service.maintenance_mode_enabled is mode["enabled"]
    assert service.maintenance_mode_uri == mode["uri"]


def _assert_env_group(group: EnvGroup, body: dict[str, Any]) -> None:
    assert isinstance(group, EnvGroup)
    assert group.id == body["id"]
    assert group.name == body["name"]
    assert group.owner_id == body["ownerId"]
    assert {(v.key, v.value) for v in group.env_vars} == {
        (v["key"], v["value"]) for v in body["envVars"]
    }


USED = [item for item in INTERACTIONS if _find(CHECKS, item)]


def _id(item: dict[str, Any]) -> str:
    return f"{item['cassette']}#{item['index']}-{item['method']}-{item['path']}"


def test_recordings_were_loaded() -> None:
    assert len(INTERACTIONS) > 100
    assert all(
        item["path"].startswith("/") and not item["path"].startswith("/v1") for item in INTERACTIONS
    )
    assert {item["status"] for item in INTERACTIONS} >= {200, 201, 204, 404}


def test_every_recorded_path_is_replayed_or_known_unused() -> None:
    unknown = {
        (item["method"], item["path"])
        for item in INTERACTIONS
        if not _find(CHECKS, item) and not _is_unused(item)
    }
    assert not unknown, f"recorded calls neither replayed nor listed as unused: {sorted(unknown)}"


def test_every_client_check_meets_a_recording() -> None:
    """A check that matches nothing would silently test nothing; we rely on every one."""
    used_checks = {_find(CHECKS, item) for item in USED}
    assert used_checks == {check for _, _, check in CHECKS}


@pytest.mark.parametrize("item", USED, ids=_id)
def test_recorded_answer_parses(item: dict[str, Any]) -> None:
    check = _find(CHECKS, item)
    assert check is not None
    mock = respx.MockRouter(base_url=BASE, assert_all_called=True)
    transport = httpx.MockTransport(mock.handler)
    with mock, RenderClient(KEY, BASE, sleep=_no_sleep, transport=transport) as client:
        check(client, mock, item)
        assert mock.calls.call_count >= 1
        for call in mock.calls:
            assert call.request.headers["Authorization"] == f"Bearer {KEY}"


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"a recorded 2xx answer must not cause a retry (slept {seconds}s)")
