"""Unit tests of RenderClient against respx: every method, pagination, retries, errors, waits.

Time is fake (injected clock and sleep), so nothing here really sleeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from render_rotator.errors import (
    APITimeoutError,
    ConflictError,
    MissingAPIKeyError,
    NotFoundError,
    RateLimitedError,
    RenderAPIError,
    ServerError,
    UnauthorizedError,
    UsageError,
)
from render_rotator.render import (
    DEFAULT_BASE_URL,
    DEPLOY_SUCCESSFUL,
    DEPLOY_TERMINAL,
    POSTGRES_TERMINAL,
    ConnectionInfo,
    Deploy,
    DeployStatus,
    EnvGroup,
    EnvVar,
    IPAllowEntry,
    Owner,
    Postgres,
    PostgresStatus,
    RenderClient,
    Service,
    is_free_tier_refusal,
)

KEY = "rnd_S3cretKeyThatMustNeverLeak42"
BASE = "https://api.render.test/v1"
OWNER = "tea-owner1"


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    router = respx.MockRouter(base_url=BASE, assert_all_called=False)
    with router:
        yield router


@pytest.fixture
def client(
    api: respx.MockRouter, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RenderClient]:
    monkeypatch.delenv("RENDER_API_KEY", raising=False)
    monkeypatch.delenv("RENDER_API_URL", raising=False)
    with RenderClient(
        KEY,
        BASE,
        max_retry_time=60.0,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        transport=httpx.MockTransport(api.handler),
    ) as c:
        yield c


# -- bodies shaped like Render's (see shared/render-api/recorded) -------------------------------


def pg_body(
    pg_id: str = "dpg-1-a", name: str = "app-db", status: str = "available", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": pg_id,
        "name": name,
        "status": status,
        "plan": "free",
        "version": "16",
        "region": "oregon",
        "databaseName": "app_db_x1y2",
        "databaseUser": "app_user",
        "owner": {"id": OWNER, "name": "Team", "email": "t@example.com", "type": "team"},
        "ipAllowList": [{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}],
        "createdAt": "2026-05-04T20:43:02.84289922Z",
        "updatedAt": "2026-05-04T20:43:02.84289922Z",
        "expiresAt": "2026-06-03T20:43:02Z",
        "diskSizeGB": 1,
        "environmentId": "evm-1",
        "suspended": "not_suspended",
        "suspenders": [],
        "role": "primary",
        "highAvailabilityEnabled": False,
        "dashboardUrl": "https://dashboard.render.com/d/" + pg_id,
        "readReplicas": [],
        "diskAutoscalingEnabled": False,
    }
    body.update(extra)
    return body


def service_body(
    srv_id: str = "srv-1", maintenance: bool = False, uri: str = "", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": srv_id,
        "name": "web",
        "type": "web_service",
        "ownerId": OWNER,
        "suspended": "not_suspended",
        "suspenders": [],
        "slug": "web",
        "createdAt": "2024-12-02T18:25:16.437791Z",
        "updatedAt": "2024-12-02T18:25:16.986341Z",
        "serviceDetails": {"maintenanceMode": {"enabled": maintenance, "uri": uri}},
    }
    body.update(extra)
    return body


def deploy_body(dep_id: str = "dep-1", status: str = "build_in_progress", **extra: Any) -> dict:
    body: dict[str, Any] = {
        "id": dep_id,
        "commit": None,
        "status": status,
        "trigger": "api",
        "createdAt": "2024-12-02T18:25:26.846684Z",
        "updatedAt": "2024-12-02T18:25:27.132171Z",
        "finishedAt": None,
    }
    body.update(extra)
    return body


def group_body(env_vars: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "evg-1",
        "name": "shared",
        "ownerId": OWNER,
        "envVars": [{"key": k, "value": v} for k, v in env_vars.items()],
        "secretFiles": [],
        "serviceLinks": [{"id": "srv-1", "name": "web", "type": "web_service"}],
        "createdAt": "2024-09-03T23:38:57.548501Z",
        "updatedAt": "2024-09-03T23:38:57.548501Z",
    }


def sent_json(route: respx.Route, index: int = -1) -> Any:
    request = route.calls[index].request
    return json.loads(request.content) if request.content else None


def error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"id": "err-1", "message": message}, headers=headers)


# -- configuration -----------------------------------------------------------------------------


def test_sends_bearer_key_accept_json_and_explicit_timeouts(
    api: respx.MockRouter, client: RenderClient
) -> None:
    route = api.get("/postgres/dpg-1-a").respond(200, json=pg_body())
    client.get_postgres("dpg-1-a")
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"
    assert str(request.url) == f"{BASE}/postgres/dpg-1-a"
    timeouts = request.extensions["timeout"]
    assert timeouts["read"] == 30.0 and timeouts["connect"] == 10.0


def test_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENDER_API_KEY", KEY)
    monkeypatch.setenv("RENDER_API_URL", "http://127.0.0.1:8765/v1/")
    router = respx.MockRouter(base_url="http://127.0.0.1:8765/v1")
    route = router.get("/owners").respond(200, json=[])
    with router, RenderClient(transport=httpx.MockTransport(router.handler)) as client:
        assert client.base_url == "http://127.0.0.1:8765/v1"
        assert client.list_owners() == []
        assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


def test_arguments_win_over_environment_and_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENDER_API_KEY", "env-key")
    monkeypatch.setenv("RENDER_API_URL", "http://env.test/v1")
    assert RenderClient("arg-key", "https://arg.test/v1/").base_url == "https://arg.test/v1"
    monkeypatch.delenv("RENDER_API_URL")
    assert RenderClient().base_url == DEFAULT_BASE_URL == "https://api.render.com/v1"


@pytest.mark.parametrize("env_value", [None, "", "   "])
def test_missing_key_is_a_one_line_usage_error(
    monkeypatch: pytest.MonkeyPatch, env_value: str | None
) -> None:
    if env_value is None:
        monkeypatch.delenv("RENDER_API_KEY", raising=False)
    else:
        monkeypatch.setenv("RENDER_API_KEY", env_value)
    with pytest.raises(MissingAPIKeyError) as info:
        RenderClient()
    assert "RENDER_API_KEY" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_context_manager_closes_and_repr_hides_key() -> None:
    with RenderClient(KEY, BASE) as client:
        assert KEY not in repr(client) and BASE in repr(client)
    with pytest.raises(RuntimeError):
        client._http.get("owners")  # closed clients refuse to send


# -- owners and postgres -------------------------------------------------------------------------


def test_list_owners_unwraps_cursor_items(api: respx.MockRouter, client: RenderClient) -> None:
    api.get("/owners").respond(
        200,
        json=[
            {
                "cursor": "c1",
                "owner": {"id": OWNER, "name": "Team", "email": "t@x", "type": "team"},
            }
        ],
    )
    assert client.list_owners() == [Owner(id=OWNER, name="Team", email="t@x", type="team")]


def test_list_postgres_filters_by_name_and_owner(
    api: respx.MockRouter, client: RenderClient
) -> None:
    route = api.get("/postgres").respond(200, json=[{"cursor": "c1", "postgres": pg_body()}])
    result = client.list_postgres(name="app-db", owner_id=OWNER)
    params = route.calls.last.request.url.params
    assert (params["name"], params["ownerId"], params["limit"]) == ("app-db", OWNER, "100")
    assert "cursor" not in params
    assert [pg.id for pg in result] == ["dpg-1-a"]


def test_pagination_follows_cursors_across_three_pages(
    api: respx.MockRouter, client: RenderClient
) -> None:
    def page(start: int, count: int) -> list[dict[str, Any]]:
        return [
            {"cursor": f"cur-{i}", "postgres": pg_body(f"dpg-{i}-a", f"db-{i}")}
            for i in range(start, start + count)
        ]

    pages = {None: page(0, 100), "cur-99": page(100, 100), "cur-199": page(200, 37)}
    route = api.get("/postgres").mock(
        side_effect=lambda request: httpx.Response(
            200, json=pages[request.url.params.get("cursor")]
        )
    )
    result = client.list_postgres()
    assert len(result) == 237 and result[-1].id == "dpg-236-a"
    assert [c.request.url.params.get("cursor") for c in route.calls] == [None, "cur-99", "cur-199"]
    assert all(c.request.url.params["limit"] == "100" for c in route.calls)


def test_pagination_stops_on_an_empty_page(api: respx.MockRouter, client: RenderClient) -> None:
    full = [{"cursor": f"c{i}", "envVar": {"key": f"K{i}", "value": "v"}} for i in range(100)]
    route = api.get("/services/srv-1/env-vars").mock(
        side_effect=[httpx.Response(200, json=full), httpx.Response(200, json=[])]
    )
    assert len(client.list_env_vars("srv-1")) == 100
    assert route.call_count == 2
    assert route.calls.last.request.url.params["cursor"] == "c99"


def test_pagination_refuses_a_repeated_cursor(api: respx.MockRouter, client: RenderClient) -> None:
    full = [{"cursor": "same", "owner": {"id": f"tea-{i}"}} for i in range(100)]
    api.get("/owners").respond(200, json=full)
    with pytest.raises(RenderAPIError, match="repeated a page cursor"):
        client.list_owners()


def test_get_postgres_parses_every_field(api: respx.MockRouter, client: RenderClient) -> None:
    api.get("/postgres/dpg-1-a").respond(200, json=pg_body(someNewField={"x": 1}))
    pg = client.get_postgres("dpg-1-a")
    assert pg == Postgres(
        id="dpg-1-a",
        name="app-db",
        status=PostgresStatus.AVAILABLE,
        status_raw="available",
        plan="free",
        version="16",
        region="oregon",
        owner_id=OWNER,
        database_name="app_db_x1y2",
        database_user="app_user",
        expires_at=datetime(2026, 6, 3, 20, 43, 2, tzinfo=UTC),
        created_at=datetime(2026, 5, 4, 20, 43, 2, 842899, tzinfo=UTC),
        updated_at=datetime(2026, 5, 4, 20, 43, 2, 842899, tzinfo=UTC),
        ip_allow_list=(IPAllowEntry("0.0.0.0/0", "everywhere"),),
        disk_size_gb=1,
        environment_id="evm-1",
        suspended=False,
        role="primary",
        high_availability_enabled=False,
        dashboard_url="https://dashboard.render.com/d/dpg-1-a",
    )
    assert pg.is_free and pg.raw["someNewField"] == {"x": 1}


def test_postgres_tolerates_missing_optionals_and_unknown_status() -> None:
    pg = Postgres.from_api({"id": "dpg-2-a", "status": "teleporting", "ipAllowList": None})
    assert pg.status is PostgresStatus.UNKNOWN and pg.status_raw == "teleporting"
    assert pg.expires_at is None and pg.ip_allow_list == () and pg.disk_size_gb is None
    assert pg.environment_id is None and pg.owner_id == ""
    deploy = Deploy.from_api({"id": "dep-9", "status": "warp_in_progress"})
    assert deploy.status is DeployStatus.UNKNOWN and deploy.status_raw == "warp_in_progress"
    assert not deploy.is_terminal


def test_status_sets_cover_the_spec() -> None:
    assert {s.value for s in PostgresStatus} >= {
        "creating",
        "available",
        "unavailable",
        "config_restart",
        "suspended",
        "maintenance_scheduled",
        "maintenance_in_progress",
        "recovery_failed",
        "recovery_in_progress",
        "unknown",
        "updating_instance",
    }
    assert PostgresStatus.AVAILABLE in POSTGRES_TERMINAL
    assert PostgresStatus.CREATING not in POSTGRES_TERMINAL
    assert DEPLOY_SUCCESSFUL <= DEPLOY_TERMINAL
    assert DeployStatus.LIVE in DEPLOY_SUCCESSFUL
    assert DeployStatus.BUILD_FAILED in DEPLOY_TERMINAL - DEPLOY_SUCCESSFUL
    assert DeployStatus.QUEUED not in DEPLOY_TERMINAL


def test_create_postgres_sends_camel_case_from_snake_case(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres").respond(200, json=[])
    route = api.post("/postgres").respond(201, json=pg_body("dpg-new-a", status="creating"))
    pg = client.create_postgres(
        name="app-db",
        owner_id=OWNER,
        plan="free",
        version=16,
        region="oregon",
        database_name="app_db",
        database_user="app_user",
        ip_allow_list=[IPAllowEntry("1.2.3.4/32", "office")],
        disk_size_gb=1,
        environmentId="evm-1",
    )
    assert sent_json(route) == {
        "name": "app-db",
        "ownerId": OWNER,
        "plan": "free",
        "version": "16",
        "region": "oregon",
        "databaseName": "app_db",
        "databaseUser": "app_user",
        "ipAllowList": [{"cidrBlock": "1.2.3.4/32", "description": "office"}],
        "diskSizeGB": 1,
        "environmentId": "evm-1",
    }
    assert pg.id == "dpg-new-a" and pg.status is PostgresStatus.CREATING


def test_create_postgres_requires_renders_required_fields(
    api: respx.MockRouter, client: RenderClient
) -> None:
    with pytest.raises(UsageError, match="ownerId, plan, version"):
        client.create_postgres(name="x")
    assert api.calls.call_count == 0


def test_update_postgres_patches(api: respx.MockRouter, client: RenderClient) -> None:
    route = api.patch("/postgres/dpg-1-a").respond(200, json=pg_body(name="renamed"))
    pg = client.update_postgres("dpg-1-a", name="renamed", ip_allow_list=[])
    assert sent_json(route) == {"name": "renamed", "ipAllowList": []}
    assert pg.name == "renamed"


def test_delete_postgres_accepts_204(api: respx.MockRouter, client: RenderClient) -> None:
    route = api.delete("/postgres/dpg-1-a").respond(204)
    client.delete_postgres("dpg-1-a")
    assert route.call_count == 1


def test_connection_info_is_parsed_and_repr_is_redacted(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres/dpg-1-a/connection-info").respond(
        200,
        json={
            "password": "pw-Secret-1",
            "internalConnectionString": "postgresql://u:pw-Secret-1@dpg-1-a/db",
            "externalConnectionString": "postgresql://u:pw-Secret-1@dpg-1-a.oregon-postgres.render.com:5432/db",
            "psqlCommand": "PGPASSWORD=pw-Secret-1 psql -h dpg-1-a.oregon-postgres.render.com",
        },
    )
    info = client.get_connection_info("dpg-1-a")
    assert isinstance(info, ConnectionInfo)
    assert info.password == "pw-Secret-1"
    assert info.internal_connection_string.endswith("@dpg-1-a/db")
    assert "pw-Secret-1" not in repr(info) and "pw-Secret-1" not in str(info)
    assert "dpg-1-a.oregon-postgres.render.com:5432/db" in repr(info)


def test_suspend_and_resume_postgres(api: respx.MockRouter, client: RenderClient) -> None:
    suspend = api.post("/postgres/dpg-1-a/suspend").respond(202)
    resume = api.post("/postgres/dpg-1-a/resume").respond(202)
    client.suspend_postgres("dpg-1-a")
    client.resume_postgres("dpg-1-a")
    assert suspend.call_count == resume.call_count == 1


# -- waiting ----------------------------------------------------------------------------------


def test_wait_for_postgres_polls_with_growing_interval(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    statuses = ["creating", "creating", "creating", "available"]
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[httpx.Response(200, json=pg_body(status=s)) for s in statuses]
    )
    seen: list[str] = []
    pg = client.wait_for_postgres("dpg-1-a", timeout=60, on_poll=lambda p: seen.append(p.status))
    assert pg.status is PostgresStatus.AVAILABLE
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert seen == statuses


def test_wait_for_postgres_interval_is_capped(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[httpx.Response(200, json=pg_body(status="creating"))] * 7
        + [httpx.Response(200, json=pg_body())]
    )
    client.wait_for_postgres("dpg-1-a", timeout=600)
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_wait_for_postgres_times_out_naming_id_and_status(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/postgres/dpg-1-a").respond(200, json=pg_body(status="creating"))
    with pytest.raises(APITimeoutError) as info:
        client.wait_for_postgres("dpg-1-a", timeout=30)
    assert "dpg-1-a" in str(info.value) and "creating" in str(info.value)
    assert sum(fake_time.sleeps) == pytest.approx(30.0)


def test_wait_for_postgres_fails_fast_on_recovery_failed(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[
            httpx.Response(200, json=pg_body(status="creating")),
            httpx.Response(200, json=pg_body(status="recovery_failed")),
        ]
    )
    with pytest.raises(RenderAPIError, match="recovery_failed") as info:
        client.wait_for_postgres("dpg-1-a", timeout=600)
    assert not isinstance(info.value, APITimeoutError)
    assert fake_time.sleeps == [1.0]


def test_wait_for_postgres_fails_when_it_settles_in_another_terminal_status(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[
            httpx.Response(200, json=pg_body(status="creating")),
            httpx.Response(200, json=pg_body(status="suspended")),
        ]
    )
    with pytest.raises(RenderAPIError, match="is suspended, not available"):
        client.wait_for_postgres("dpg-1-a")


def test_wait_for_postgres_tolerates_the_old_state_right_after_a_transition(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[
            httpx.Response(200, json=pg_body(status="available")),
            httpx.Response(200, json=pg_body(status="available")),
            httpx.Response(200, json=pg_body(status="suspended")),
        ]
    )
    assert client.wait_for_postgres("dpg-1-a", "suspended").status is PostgresStatus.SUSPENDED


def test_wait_for_postgres_rejects_an_unknown_target(client: RenderClient) -> None:
    with pytest.raises(UsageError):
        client.wait_for_postgres("dpg-1-a", status="ready")


# -- services, env vars, env groups -----------------------------------------------------------


def test_get_and_list_services(api: respx.MockRouter, client: RenderClient) -> None:
    api.get("/services/srv-1").respond(200, json=service_body(maintenance=True, uri="/m"))
    listing = api.get("/services").respond(
        200, json=[{"cursor": "c", "service": service_body("srv-2")}]
    )
    service = client.get_service("srv-1")
    assert isinstance(service, Service)
    assert (service.id, service.type, service.owner_id) == ("srv-1", "web_service", OWNER)
    assert service.maintenance_mode_enabled is True and service.maintenance_mode_uri == "/m"
    assert [s.id for s in client.list_services(name="web", owner_id=OWNER)] == ["srv-2"]
    assert listing.calls.last.request.url.params["name"] == "web"


def test_list_env_vars_across_pages(api: respx.MockRouter, client: RenderClient) -> None:
    first = [{"cursor": f"c{i}", "envVar": {"key": f"K{i}", "value": str(i)}} for i in range(100)]
    second = [{"cursor": "c100", "envVar": {"key": "DATABASE_URL", "value": "postgresql://x"}}]
    api.get("/services/srv-1/env-vars").mock(
        side_effect=[httpx.Response(200, json=first), httpx.Response(200, json=second)]
    )
    env_vars = client.list_env_vars("srv-1")
    assert len(env_vars) == 101
    assert env_vars[-1] == EnvVar("DATABASE_URL", "postgresql://x")
    assert "postgresql://x" not in repr(env_vars[-1])


def test_single_env_var_calls_never_replace_the_whole_list(
    api: respx.MockRouter, client: RenderClient
) -> None:
    whole_list = api.put("/services/srv-1/env-vars")
    get = api.get("/services/srv-1/env-vars/DATABASE_URL").respond(
        200, json={"key": "DATABASE_URL", "value": "old"}
    )
    put = api.put("/services/srv-1/env-vars/DATABASE_URL").respond(
        200, json={"key": "DATABASE_URL", "value": "new"}
    )
    delete = api.delete("/services/srv-1/env-vars/OLD_URL").respond(204)
    assert client.get_env_var("srv-1", "DATABASE_URL") == EnvVar("DATABASE_URL", "old")
    assert client.set_env_var("srv-1", "DATABASE_URL", "new") == EnvVar("DATABASE_URL", "new")
    assert sent_json(put) == {"value": "new"}
    client.delete_env_var("srv-1", "OLD_URL")
    assert get.call_count == put.call_count == delete.call_count == 1
    assert whole_list.call_count == 0


def test_env_var_keys_are_quoted_in_paths(api: respx.MockRouter, client: RenderClient) -> None:
    route = api.put("/services/srv-1/env-vars/A%2FB").respond(
        200, json={"key": "A/B", "value": "v"}
    )
    client.set_env_var("srv-1", "A/B", "v")
    assert route.call_count == 1


def test_env_group_calls(api: respx.MockRouter, client: RenderClient) -> None:
    api.get("/env-groups/evg-1").respond(200, json=group_body({"A": "1"}))
    put = api.put("/env-groups/evg-1/env-vars/DATABASE_URL").respond(
        200, json=group_body({"A": "1", "DATABASE_URL": "postgresql://new"})
    )
    delete = api.delete("/env-groups/evg-1/env-vars/A").respond(204)
    group = client.get_env_group("evg-1")
    assert isinstance(group, EnvGroup) and group.get("A") == "1" and group.service_ids == ("srv-1",)
    updated = client.set_env_group_var("evg-1", "DATABASE_URL", "postgresql://new")
    assert sent_json(put) == {"value": "postgresql://new"}
    assert updated.get("DATABASE_URL") == "postgresql://new" and updated.get("nope") is None
    client.delete_env_group_var("evg-1", "A")
    assert delete.call_count == 1


def test_set_env_group_var_reads_the_group_when_answer_is_not_a_group(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.put("/env-groups/evg-1/env-vars/K").respond(200, json={"key": "K", "value": "v"})
    get = api.get("/env-groups/evg-1").respond(200, json=group_body({"K": "v"}))
    assert client.set_env_group_var("evg-1", "K", "v").get("K") == "v"
    assert get.call_count == 1


def test_suspend_and_resume_service(api: respx.MockRouter, client: RenderClient) -> None:
    suspend = api.post("/services/srv-1/suspend").respond(202)
    resume = api.post("/services/srv-1/resume").respond(202)
    client.suspend_service("srv-1")
    client.resume_service("srv-1")
    assert suspend.call_count == resume.call_count == 1
    assert sent_json(suspend) is None


def test_set_maintenance_mode_keeps_the_current_page(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/services/srv-1").respond(200, json=service_body(uri="https://example.com/down"))
    patch = api.patch("/services/srv-1").respond(
        200, json=service_body(maintenance=True, uri="https://example.com/down")
    )
    service = client.set_maintenance_mode("srv-1", True)
    assert sent_json(patch) == {
        "serviceDetails": {"maintenanceMode": {"enabled": True, "uri": "https://example.com/down"}}
    }
    assert service.maintenance_mode_enabled is True


def test_set_maintenance_mode_with_explicit_uri_skips_the_read(
    api: respx.MockRouter, client: RenderClient
) -> None:
    get = api.get("/services/srv-1")
    patch = api.patch("/services/srv-1").respond(200, json=service_body())
    assert client.set_maintenance_mode("srv-1", False, uri="").maintenance_mode_enabled is False
    assert sent_json(patch) == {
        "serviceDetails": {"maintenanceMode": {"enabled": False, "uri": ""}}
    }
    assert get.call_count == 0


# -- deploys ----------------------------------------------------------------------------------


def test_trigger_deploy_201_returns_the_deploy(api: respx.MockRouter, client: RenderClient) -> None:
    route = api.post("/services/srv-1/deploys").respond(201, json=deploy_body())
    deploy = client.trigger_deploy("srv-1")
    assert isinstance(deploy, Deploy) and deploy.id == "dep-1"
    assert deploy.status is DeployStatus.BUILD_IN_PROGRESS
    assert sent_json(route) == {}
    client.trigger_deploy("srv-1", clear_cache=True)
    assert sent_json(route) == {"clearCache": "clear"}


def test_trigger_deploy_202_finds_the_queued_deploy(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.post("/services/srv-1/deploys").respond(202)
    listing = api.get("/services/srv-1/deploys").respond(
        200,
        json=[
            {"cursor": "a", "deploy": deploy_body("dep-3", "queued")},
            {"cursor": "b", "deploy": deploy_body("dep-2", "build_in_progress")},
            {"cursor": "c", "deploy": deploy_body("dep-1", "live")},
        ],
    )
    deploy = client.trigger_deploy("srv-1")
    assert deploy is not None and deploy.id == "dep-3"
    assert listing.calls.last.request.url.params["limit"] == "5"


def test_trigger_deploy_202_returns_none_when_nothing_matches(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.post("/services/srv-1/deploys").respond(202, content=b"")
    api.get("/services/srv-1/deploys").respond(
        200, json=[{"cursor": "c", "deploy": deploy_body("dep-1", "live")}]
    )
    assert client.trigger_deploy("srv-1") is None


def test_list_and_get_deploys(api: respx.MockRouter, client: RenderClient) -> None:
    listing = api.get("/services/srv-1/deploys").respond(
        200, json=[{"cursor": str(i), "deploy": deploy_body(f"dep-{i}", "live")} for i in range(3)]
    )
    api.get("/services/srv-1/deploys/dep-7").respond(200, json=deploy_body("dep-7", "live"))
    assert [d.id for d in client.list_deploys("srv-1", limit=3)] == ["dep-0", "dep-1", "dep-2"]
    assert listing.calls.last.request.url.params["limit"] == "3"
    deploy = client.get_deploy("srv-1", "dep-7")
    assert deploy.is_successful and deploy.is_terminal


def test_wait_for_deploy_returns_the_final_deploy(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/services/srv-1/deploys/dep-1").mock(
        side_effect=[
            httpx.Response(200, json=deploy_body(status=s))
            for s in ("queued", "build_in_progress", "update_in_progress", "live")
        ]
    )
    deploy = client.wait_for_deploy("srv-1", "dep-1", timeout=120)
    assert deploy.status in DEPLOY_SUCCESSFUL
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


def test_wait_for_deploy_returns_failures_for_the_caller_to_judge(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/services/srv-1/deploys/dep-1").respond(200, json=deploy_body(status="build_failed"))
    deploy = client.wait_for_deploy("srv-1", "dep-1")
    assert deploy.status is DeployStatus.BUILD_FAILED and deploy.status not in DEPLOY_SUCCESSFUL


def test_wait_for_deploy_times_out(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/services/srv-1/deploys/dep-1").respond(
        200, json=deploy_body(status="update_in_progress")
    )
    with pytest.raises(APITimeoutError, match="dep-1.*update_in_progress"):
        client.wait_for_deploy("srv-1", "dep-1", timeout=45)
    assert sum(fake_time.sleeps) == pytest.approx(45.0)


# -- retries ----------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds_and_logs_the_retry(
    api: respx.MockRouter,
    client: RenderClient,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="render_rotator.render")
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[
            error(429, "rate limited", **{"Retry-After": "7"}),
            httpx.Response(200, json=pg_body()),
        ]
    )
    assert client.get_postgres("dpg-1-a").id == "dpg-1-a"
    assert fake_time.sleeps == [7.0]
    record = next(r for r in caplog.records if r.name == "render_rotator.render")
    assert record.levelno == logging.WARNING
    assert "GET /postgres/dpg-1-a answered 429" in record.getMessage()
    assert "7.0s" in record.getMessage()


def test_429_honours_retry_after_http_date(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    headers = {
        "Retry-After": "Mon, 04 May 2026 20:43:05 GMT",
        "Date": "Mon, 04 May 2026 20:43:02 GMT",
    }
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[error(429, "slow down", **headers), httpx.Response(200, json=pg_body())]
    )
    client.get_postgres("dpg-1-a")
    assert fake_time.sleeps == [3.0]


def test_429_honours_ratelimit_reset(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    headers = {"Ratelimit-Limit": "400", "Ratelimit-Remaining": "0", "Ratelimit-Reset": "12"}
    api.get("/postgres/dpg-1-a").mock(
        side_effect=[error(429, "rate limit", **headers), httpx.Response(200, json=pg_body())]
    )
    client.get_postgres("dpg-1-a")
    assert fake_time.sleeps == [12.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime, status: int
) -> None:
    route = api.get("/services/srv-1").mock(
        side_effect=[
            error(status, "oops", **{"Ratelimit-Reset": "58"}),
            error(status, "oops"),
            httpx.Response(200, json=service_body()),
        ]
    )
    assert client.get_service("srv-1").id == "srv-1"
    assert route.call_count == 3
    # exponential with up to 1 s of jitter; Ratelimit-Reset only counts on a 429
    assert 1.0 <= fake_time.sleeps[0] <= 2.0 and 2.0 <= fake_time.sleeps[1] <= 3.0


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_transport_errors_are_retried_for_idempotent_calls(
    api: respx.MockRouter, client: RenderClient, exc: Exception
) -> None:
    route = api.put("/services/srv-1/env-vars/K").mock(
        side_effect=[exc, httpx.Response(200, json={"key": "K", "value": "v"})]
    )
    assert client.set_env_var("srv-1", "K", "v").value == "v"
    assert route.call_count == 2


def test_429_exhausted_raises_rate_limited_within_the_budget(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    route = api.get("/owners").respond(
        429, json={"message": "rate limit exceeded"}, headers={"Retry-After": "10"}
    )
    with pytest.raises(RateLimitedError) as info:
        client.list_owners()
    err = info.value
    assert (err.status_code, err.method, err.path) == (429, "GET", "/owners")
    assert "rate limit exceeded" in str(err)
    assert fake_time.sleeps == [10.0] * 6 and route.call_count == 7
    assert sum(fake_time.sleeps) <= client.max_retry_time


def test_a_wait_beyond_the_budget_is_not_attempted(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/owners").respond(
        429, json={"message": "hourly limit"}, headers={"Ratelimit-Reset": "1017"}
    )
    with pytest.raises(RateLimitedError) as info:
        client.list_owners()
    assert fake_time.sleeps == []
    assert "1017" in str(info.value)


def test_5xx_exhausted_raises_server_error_with_renders_message(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/services/srv-1").respond(503, json={"id": "x", "message": "maintenance"})
    with pytest.raises(ServerError) as info:
        client.get_service("srv-1")
    assert info.value.status_code == 503 and "maintenance" in str(info.value)
    assert len(fake_time.sleeps) >= 3
    assert sum(fake_time.sleeps) <= client.max_retry_time
    waits = fake_time.sleeps
    assert all(b >= a - 1.0 for a, b in zip(waits, waits[1:], strict=False))  # grows


def test_5xx_non_json_body_falls_back_to_reason(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/services/srv-1").respond(502, text="<html>bad gateway</html>")
    with pytest.raises(ServerError, match="Bad Gateway"):
        client.get_service("srv-1")


def test_connection_errors_exhausted_raise_api_timeout(
    api: respx.MockRouter, client: RenderClient, fake_time: FakeTime
) -> None:
    api.get("/owners").mock(side_effect=httpx.ConnectError("[Errno 101] Network is unreachable"))
    with pytest.raises(APITimeoutError, match="could not reach") as info:
        client.list_owners()
    assert info.value.method == "GET" and info.value.path == "/owners"
    assert sum(fake_time.sleeps) <= client.max_retry_time and len(fake_time.sleeps) >= 3


def test_read_timeouts_exhausted_raise_api_timeout(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/owners").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(APITimeoutError, match="no answer within 30s"):
        client.list_owners()


def test_retried_delete_that_finds_nothing_has_succeeded(
    api: respx.MockRouter, client: RenderClient
) -> None:
    route = api.delete("/postgres/dpg-1-a").mock(
        side_effect=[error(502, "bad gateway"), error(404, "not found: dpg-1-a")]
    )
    client.delete_postgres("dpg-1-a")
    assert route.call_count == 2


def test_deleting_a_missing_database_is_not_found(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.delete("/postgres/dpg-gone-a").respond(404, json={"message": "not found: dpg-gone-a"})
    with pytest.raises(NotFoundError, match="not found: dpg-gone-a"):
        client.delete_postgres("dpg-gone-a")


def test_suspend_service_is_retried(api: respx.MockRouter, client: RenderClient) -> None:
    route = api.post("/services/srv-1/suspend").mock(
        side_effect=[httpx.ReadTimeout("slow"), error(500, "x"), httpx.Response(202)]
    )
    client.suspend_service("srv-1")
    assert route.call_count == 3


# -- create_postgres never duplicates ---------------------------------------------------------


def _create(client: RenderClient) -> Postgres:
    return client.create_postgres(name="app-db-2", owner_id=OWNER, plan="free", version="16")


def test_create_failing_ambiguously_returns_the_database_render_made(
    api: respx.MockRouter, client: RenderClient
) -> None:
    created = pg_body("dpg-new-a", "app-db-2", status="creating")
    listing = api.get("/postgres").mock(
        side_effect=[
            httpx.Response(200, json=[]),  # before: nothing by that name
            httpx.Response(200, json=[{"cursor": "c", "postgres": created}]),
        ]
    )
    post = api.post("/postgres").respond(500, json={"message": "internal error"})
    pg = _create(client)
    assert pg.id == "dpg-new-a"
    assert post.call_count == 1  # never sent twice
    assert listing.calls.last.request.url.params["name"] == "app-db-2"
    assert listing.calls.last.request.url.params["ownerId"] == OWNER


def test_create_read_timeout_checks_before_retrying(
    api: respx.MockRouter, client: RenderClient
) -> None:
    created = pg_body("dpg-new-a", "app-db-2", status="creating")
    api.get("/postgres").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[{"cursor": "c", "postgres": created}]),
        ]
    )
    post = api.post("/postgres").mock(side_effect=httpx.ReadTimeout("no answer"))
    assert _create(client).id == "dpg-new-a"
    assert post.call_count == 1


def test_create_retries_when_render_did_not_create(
    api: respx.MockRouter, client: RenderClient
) -> None:
    listing = api.get("/postgres").respond(200, json=[])
    post = api.post("/postgres").mock(
        side_effect=[
            error(503, "unavailable"),
            httpx.Response(201, json=pg_body("dpg-new-a", "app-db-2")),
        ]
    )
    assert _create(client).id == "dpg-new-a"
    assert post.call_count == 2 and listing.call_count == 2  # before, then after the 503


def test_create_does_not_mistake_an_older_namesake_for_its_own(
    api: respx.MockRouter, client: RenderClient
) -> None:
    older = {"cursor": "c", "postgres": pg_body("dpg-old-a", "app-db-2")}
    api.get("/postgres").respond(200, json=[older])
    post = api.post("/postgres").mock(
        side_effect=[error(500, "oops"), httpx.Response(201, json=pg_body("dpg-new-a", "app-db-2"))]
    )
    assert _create(client).id == "dpg-new-a"
    assert post.call_count == 2


@pytest.mark.parametrize("first", [error(429, "slow down"), httpx.ConnectError("refused")])
def test_create_retries_unprocessed_attempts_without_looking(
    api: respx.MockRouter, client: RenderClient, first: Any
) -> None:
    listing = api.get("/postgres").respond(200, json=[])
    post = api.post("/postgres").mock(
        side_effect=[first, httpx.Response(201, json=pg_body("dpg-new-a", "app-db-2"))]
    )
    assert _create(client).id == "dpg-new-a"
    assert post.call_count == 2 and listing.call_count == 1  # only the check before sending


def test_create_refused_after_an_ambiguous_attempt_looks_again(
    api: respx.MockRouter, client: RenderClient
) -> None:
    created = {"cursor": "c", "postgres": pg_body("dpg-new-a", "app-db-2", status="creating")}
    api.get("/postgres").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[]),  # not visible yet after the 502
            httpx.Response(200, json=[created]),  # visible once Render refuses a second one
        ]
    )
    post = api.post("/postgres").mock(
        side_effect=[
            error(502, "bad gateway"),
            error(400, "cannot have more than one active free tier database"),
        ]
    )
    assert _create(client).id == "dpg-new-a"
    assert post.call_count == 2


# -- trigger_deploy is not idempotent ---------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [(error(500, "boom"), ServerError), (httpx.ReadTimeout("slow"), APITimeoutError)],
)
def test_trigger_deploy_surfaces_ambiguous_failures(
    api: respx.MockRouter,
    client: RenderClient,
    fake_time: FakeTime,
    failure: Any,
    error_type: type[Exception],
) -> None:
    route = api.post("/services/srv-1/deploys").mock(side_effect=[failure])
    with pytest.raises(error_type):
        client.trigger_deploy("srv-1")
    assert route.call_count == 1 and fake_time.sleeps == []


@pytest.mark.parametrize("first", [error(429, "slow down"), httpx.ConnectError("refused")])
def test_trigger_deploy_retries_when_render_did_not_act(
    api: respx.MockRouter, client: RenderClient, first: Any
) -> None:
    route = api.post("/services/srv-1/deploys").mock(
        side_effect=[first, httpx.Response(201, json=deploy_body())]
    )
    deploy = client.trigger_deploy("srv-1")
    assert deploy is not None and deploy.id == "dep-1"
    assert route.call_count == 2


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "error_type"),
    [
        (400, "invalid plan", RenderAPIError),
        (401, "unauthorized", UnauthorizedError),
        (403, "forbidden", UnauthorizedError),
        (404, "not found: srv-1", NotFoundError),
        (410, "gone", NotFoundError),
        (402, "payment information required", ConflictError),
        (409, "service is already suspended", ConflictError),
        (400, "cannot have more than one active free tier database", ConflictError),
    ],
)
def test_errors_are_typed_and_carry_renders_message(
    api: respx.MockRouter,
    client: RenderClient,
    fake_time: FakeTime,
    status: int,
    message: str,
    error_type: type[RenderAPIError],
) -> None:
    route = api.get("/services/srv-1").respond(status, json={"id": "e1", "message": message})
    with pytest.raises(RenderAPIError) as info:
        client.get_service("srv-1")
    err = info.value
    assert type(err) is error_type
    assert message in err.message
    assert (err.status_code, err.method, err.path) == (status, "GET", "/services/srv-1")
    assert route.call_count == 1 and fake_time.sleeps == []  # 4xx are never retried


def test_errors_name_renders_request_id(api: respx.MockRouter, client: RenderClient) -> None:
    request_id = "api-67697cb9cc-xcbhc/vgcYLi38GW-154027"  # the recorded shape
    api.get("/services/srv-1").respond(
        404, json={"message": "not found: srv-1"}, headers={"Render-Request-Id": request_id}
    )
    with pytest.raises(NotFoundError) as info:
        client.get_service("srv-1")
    assert info.value.request_id == request_id
    assert str(info.value) == (
        f"Render API GET /services/srv-1 failed (404): not found: srv-1 (request id {request_id})"
    )


def test_request_id_on_exhausted_retries_and_refusals(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres").respond(200, json=[])
    api.post("/postgres").respond(
        400,
        json={"id": "e1", "message": "cannot have more than one active free tier database"},
        headers={"Render-Request-Id": "req-create-1"},
    )
    api.get("/services/srv-1").respond(
        503, json={"message": "busy"}, headers={"Render-Request-Id": "req-busy-9"}
    )
    with pytest.raises(ConflictError, match=r"\(request id req-create-1\)"):
        _create(client)
    with pytest.raises(ServerError) as info:
        client.get_service("srv-1")
    assert info.value.request_id == "req-busy-9" and "(request id req-busy-9)" in str(info.value)


def test_error_without_request_id_or_with_a_hostile_one(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/services/srv-1").respond(400, json={"message": "bad"})
    api.get("/services/srv-2").respond(
        400, json={"message": "bad"}, headers={"Render-Request-Id": "a b\tc" + "x" * 300}
    )
    with pytest.raises(RenderAPIError) as plain:
        client.get_service("srv-1")
    assert plain.value.request_id is None and "request id" not in str(plain.value)
    with pytest.raises(RenderAPIError) as hostile:
        client.get_service("srv-2")
    assert hostile.value.request_id == ("abc" + "x" * 300)[:128]


def test_free_tier_refusal_is_recognised(api: respx.MockRouter, client: RenderClient) -> None:
    api.get("/postgres").respond(200, json=[])
    api.post("/postgres").respond(
        400, json={"message": "You may only have one free database per workspace"}
    )
    with pytest.raises(ConflictError) as info:
        _create(client)
    assert is_free_tier_refusal(info.value)
    assert not is_free_tier_refusal(ConflictError("name taken", status_code=409))
    assert not is_free_tier_refusal(NotFoundError("free plan limit", status_code=404))
    assert not is_free_tier_refusal(ValueError("free tier limit"))


def test_unexpected_answer_shape_is_an_api_error(
    api: respx.MockRouter, client: RenderClient
) -> None:
    api.get("/postgres/dpg-1-a").respond(200, json=["not", "an", "object"])
    api.get("/services/srv-1").respond(200, json={"name": "no id"})
    with pytest.raises(RenderAPIError, match="unexpected answer"):
        client.get_postgres("dpg-1-a")
    with pytest.raises(RenderAPIError, match="unexpected answer"):
        client.get_service("srv-1")


# -- secrets ----------------------------------------------------------------------------------


def test_api_key_and_values_never_reach_errors_or_logs(
    api: respx.MockRouter, client: RenderClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_value = "postgresql://u:DbPassw0rd@dpg-1-a/db"
    api.get("/owners").respond(401, json={"message": f"invalid key {KEY}"})
    api.get("/services/srv-1").respond(429, json={"message": "slow"})
    api.get("/services/srv-2").mock(side_effect=httpx.ConnectError(f"refused {KEY}"))
    api.get("/services/srv-3").respond(500, json={"message": "boom"})
    api.get("/services/srv-4").respond(200, json={"oops": KEY})
    api.put("/services/srv-1/env-vars/DATABASE_URL").mock(
        side_effect=[error(503, "later"), error(400, "bad value")]
    )
    errors: list[RenderAPIError] = []
    calls = [
        client.list_owners,
        lambda: client.get_service("srv-1"),
        lambda: client.get_service("srv-2"),
        lambda: client.get_service("srv-3"),
        lambda: client.get_service("srv-4"),
        lambda: client.set_env_var("srv-1", "DATABASE_URL", secret_value),
    ]
    for call in calls:
        with pytest.raises(RenderAPIError) as info:
            call()
        errors.append(info.value)
    assert [type(e) for e in errors] == [
        UnauthorizedError,
        RateLimitedError,
        APITimeoutError,
        ServerError,
        RenderAPIError,
        RenderAPIError,
    ]
    assert any(r.name == "render_rotator.render" for r in caplog.records)
    for err in errors:
        for text in (str(err), repr(err), err.message, err.hint or "", repr(err.args)):
            assert KEY not in text
            assert "DbPassw0rd" not in text
    assert KEY not in caplog.text and "DbPassw0rd" not in caplog.text
    assert KEY not in repr(client)


def test_the_client_sends_an_empty_allow_list_as_is() -> None:
    with respx.MockRouter(base_url=BASE, assert_all_called=False) as router:
        router.get("/postgres").respond(200, json=[])
        route = router.post("/postgres").respond(
            201, json={"id": "dpg-2-a", "name": "x", "status": "creating", "plan": "free"}
        )
        with RenderClient(api_key="rnd_unit", base_url=BASE) as client:
            client.create_postgres(
                name="x", ownerId="tea-1", plan="free", version="18", ipAllowList=[]
            )
    assert json.loads(route.calls.last.request.content)["ipAllowList"] == []
