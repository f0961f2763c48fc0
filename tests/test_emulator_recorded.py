"""The emulator answers the rotation's calls like Render really did (shared/render-api/recorded).

Each test replays a recorded request (same body where it makes sense) against the emulator and
checks the same status code, the same JSON key sets (recursively; list items compared by their
first element; the list wrapping ``[{"cursor", "<resource>"}]``), and the Ratelimit-* and
Content-Type headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from recorded import load_interactions, recorded_dir, require_shared

from render_rotator.sandbox import Cluster, RenderEmulator
from render_rotator.sandbox.emulator import IN_PROCESS_URL, ManualClock

require_shared(recorded_dir(), module=True)

RECORDED_OWNER = "some-owner-id"
DEPLOY_STATUSES = {
    "created", "queued", "build_in_progress", "update_in_progress", "live", "deactivated",
    "build_failed", "update_failed", "canceled", "pre_deploy_in_progress", "pre_deploy_failed",
}  # fmt: skip


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    return load_interactions()


@pytest.fixture
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    e = RenderEmulator(pg, provision_delay=0.1, deploy_delay=0.1, clock=ManualClock())
    try:
        e.add_owner(
            "Tucker's Terraform Cassette Test", "email@example.com", owner_id=RECORDED_OWNER
        )
        yield e
    finally:
        e.stop()


@pytest.fixture
def api(emu: RenderEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    transport = httpx.WSGITransport(app=emu.app)
    with httpx.Client(transport=transport, base_url=IN_PROCESS_URL, headers=headers) as client:
        yield client


def find(
    recorded: list[dict[str, Any]],
    method: str,
    path_pattern: str,
    *,
    status: int | None = None,
    cassette: str | None = None,
    query: bool | None = None,
) -> dict[str, Any]:
    """The first recorded interaction matching; fails the test when the recordings lack it."""
    for item in recorded:
        if item["method"] != method or not re.fullmatch(path_pattern, item["path"]):
            continue
        if status is not None and item["status"] != status:
            continue
        if cassette is not None and item["cassette"] != cassette:
            continue
        if query is not None and bool(item["query"]) != query:
            continue
        return item
    raise AssertionError(f"no recorded {method} {path_pattern} ({status})")


def shape_differences(recorded: Any, ours: Any, where: str = "$") -> list[str]:
    """Where the JSON key sets differ (values are not compared, only structure)."""
    if isinstance(recorded, dict) and isinstance(ours, dict):
        problems = []
        missing, extra = set(recorded) - set(ours), set(ours) - set(recorded)
        if missing:
            problems.append(f"{where}: missing keys {sorted(missing)}")
        if extra:
            problems.append(f"{where}: extra keys {sorted(extra)}")
        for key in set(recorded) & set(ours):
            problems += shape_differences(recorded[key], ours[key], f"{where}.{key}")
        return problems
    if isinstance(recorded, list) and isinstance(ours, list):
        if recorded and ours:
            return shape_differences(recorded[0], ours[0], f"{where}[0]")
        return []
    if recorded is None or ours is None:
        return []  # null where the other side has a value: same key, optional content
    kinds = (dict, list)
    if any(isinstance(recorded, k) != isinstance(ours, k) for k in kinds):
        return [f"{where}: recorded {type(recorded).__name__}, emulator {type(ours).__name__}"]
    return []


def assert_like_recorded(item: dict[str, Any], response: httpx.Response) -> Any:
    """Same status, same key sets, same Ratelimit-* headers and Content-Type."""
    assert response.status_code == item["status"], (item["method"], item["path"], response.text)
    for name in item["headers"]:
        if name.lower().startswith("ratelimit-"):
            assert name in response.headers, f"missing header {name}"
            assert response.headers[name].isdigit()
    recorded_type = item["headers"].get("Content-Type")
    assert response.headers.get("Content-Type") == recorded_type
    if item["body"] is None:
        assert response.content == b""
        return None
    ours = response.json()
    problems = shape_differences(item["body"], ours)
    assert not problems, f"{item['method']} {item['path']}: " + "; ".join(problems)
    return ours


# -- postgres ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cassette", ["postgres.yaml", "postgres_datasource.yaml"])
def test_postgres_calls_match_recordings(
    recorded: list[dict[str, Any]], emu: RenderEmulator, api: httpx.Client, cassette: str
) -> None:
    create = find(recorded, "POST", "/postgres", cassette=cassette)
    # Replay Render's own request body: plan, region, names, disk size, allow list; the
    # version is one this machine can serve (the sandbox refuses the others, see test_emulator).
    body = {**create["request_body"], "version": str(emu.cluster.major)}
    created = assert_like_recorded(create, api.post("/postgres", json=body))
    assert created["status"] in ("creating", "unknown")
    assert created["version"] == body["version"]
    pg_id = created["id"]
    assert re.fullmatch(r"dpg-[0-9a-v]{20}-a", pg_id)

    get = find(recorded, "GET", r"/postgres/dpg-[^/]+", cassette=cassette)
    assert_like_recorded(get, api.get(f"/postgres/{pg_id}"))

    info = find(recorded, "GET", r"/postgres/dpg-[^/]+/connection-info", cassette=cassette)
    ours = assert_like_recorded(info, api.get(f"/postgres/{pg_id}/connection-info"))
    assert ours["internalConnectionString"].startswith("postgresql://")

    if cassette == "postgres.yaml":
        patch = find(recorded, "PATCH", r"/postgres/dpg-[^/]+", cassette=cassette)
        patched = assert_like_recorded(
            patch, api.patch(f"/postgres/{pg_id}", json=patch["request_body"])
        )
        assert patched["name"] == patch["request_body"]["name"]
        assert patched["plan"] == patch["request_body"]["plan"]

    delete = find(recorded, "DELETE", r"/postgres/dpg-[^/]+", cassette=cassette)
    assert_like_recorded(delete, api.delete(f"/postgres/{pg_id}"))


def test_postgres_list_wraps_items_with_cursors(
    recorded: list[dict[str, Any]], emu: RenderEmulator, api: httpx.Client
) -> None:
    create = find(recorded, "POST", "/postgres", cassette="postgres_datasource.yaml")
    body = {**create["request_body"], "version": str(emu.cluster.major)}
    created = api.post("/postgres", json=body).json()
    listed = api.get("/postgres", params={"name": created["name"], "ownerId": RECORDED_OWNER})
    assert listed.status_code == 200
    items = listed.json()
    assert [set(item) for item in items] == [{"cursor", "postgres"}]
    # The list item is the same object as GET /postgres/{id} (the spec's postgres schema).
    get = find(recorded, "GET", r"/postgres/dpg-[^/]+", cassette="postgres_datasource.yaml")
    assert not shape_differences(get["body"], items[0]["postgres"])
    api.delete(f"/postgres/{created['id']}")


# -- services ---------------------------------------------------------------------------------


def test_service_calls_match_recordings(
    recorded: list[dict[str, Any]], emu: RenderEmulator, api: httpx.Client
) -> None:
    name = "web-service-env-var-tf"
    sid = emu.add_service(name, RECORDED_OWNER)

    listing = find(recorded, "GET", "/services", query=True)
    listed = assert_like_recorded(listing, api.get("/services", params=listing["query"]))
    assert [item["service"]["id"] for item in listed] == [sid]

    get = find(recorded, "GET", r"/services/srv-[^/]+")
    assert_like_recorded(get, api.get(f"/services/{sid}"))

    patch = find(recorded, "PATCH", r"/services/srv-[^/]+")
    assert_like_recorded(patch, api.patch(f"/services/{sid}", json=patch["request_body"]))

    put_all = find(recorded, "PUT", r"/services/srv-[^/]+/env-vars")
    assert_like_recorded(
        put_all, api.put(f"/services/{sid}/env-vars", json=put_all["request_body"])
    )

    env_list = next(
        i
        for i in recorded
        if i["method"] == "GET" and i["path"].endswith("/env-vars") and i["body"] and not i["query"]
    )
    page = assert_like_recorded(env_list, api.get(f"/services/{sid}/env-vars"))
    after_last = find(recorded, "GET", r"/services/srv-[^/]+/env-vars", query=True)
    assert after_last["body"] == []
    rest = assert_like_recorded(
        after_last, api.get(f"/services/{sid}/env-vars", params={"cursor": page[-1]["cursor"]})
    )
    assert rest == []

    cleared = next(
        i
        for i in recorded
        if i["method"] == "PUT" and i["path"].endswith("/env-vars") and i["request_body"] is None
    )
    assert (
        assert_like_recorded(cleared, api.put(f"/services/{sid}/env-vars", content=b"null")) == []
    )

    deploy = find(recorded, "POST", r"/services/srv-[^/]+/deploys")
    ours = assert_like_recorded(
        deploy, api.post(f"/services/{sid}/deploys", json=deploy["request_body"])
    )
    assert ours["status"] in DEPLOY_STATUSES and ours["trigger"] == deploy["body"]["trigger"]


def test_not_found_matches_recordings(recorded: list[dict[str, Any]], api: httpx.Client) -> None:
    missing = find(recorded, "GET", r"/logs/streams/resource/srv-[^/]+", status=404)
    response = api.get("/services/srv-ct6vn35j0q5s700ckga0")
    ours = assert_like_recorded(missing, response)
    assert ours == missing["body"]  # {"message": "not found: srv-..."}


# -- env groups -------------------------------------------------------------------------------


def test_env_group_calls_match_recordings(
    recorded: list[dict[str, Any]], emu: RenderEmulator, api: httpx.Client
) -> None:
    create = find(recorded, "POST", "/env-groups")
    env_vars = {v["key"]: v.get("value", "generated") for v in create["request_body"]["envVars"]}
    gid = emu.add_env_group(create["request_body"]["name"], RECORDED_OWNER, env_vars)

    get = find(recorded, "GET", r"/env-groups/evg-[^/]+")
    assert_like_recorded(get, api.get(f"/env-groups/{gid}"))

    put = find(recorded, "PUT", r"/env-groups/evg-[^/]+/env-vars/[^/]+")
    key = put["path"].rsplit("/", 1)[1]
    ours = assert_like_recorded(
        put, api.put(f"/env-groups/{gid}/env-vars/{key}", json=put["request_body"])
    )
    # Like Render, a new key comes first in the answer.
    assert ours["envVars"][0] == {"key": key, "value": put["request_body"]["value"]}
    assert [v["key"] for v in ours["envVars"]] == [v["key"] for v in put["body"]["envVars"]]

    delete = find(recorded, "DELETE", r"/env-groups/evg-[^/]+/env-vars/[^/]+")
    deleted_key = delete["path"].rsplit("/", 1)[1]
    assert_like_recorded(delete, api.delete(f"/env-groups/{gid}/env-vars/{deleted_key}"))
    assert deleted_key not in emu.env_group_vars(gid)
