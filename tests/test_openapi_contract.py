"""The client's requests and the emulator's answers, validated against Render's OpenAPI spec.

Every call a rotation makes is sent by the real RenderClient to the real emulator; each
request/response pair is checked with openapi-core against `shared/render-api/openapi.json`
(paths, parameters, bodies, status codes, enums).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

openapi_core = pytest.importorskip("openapi_core")
from openapi_core.contrib.werkzeug import (  # noqa: E402
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from recorded import recorded_dir, require_shared, shared_dir  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

from render_rotator.render import RenderClient  # noqa: E402
from render_rotator.sandbox.cluster import Cluster  # noqa: E402
from render_rotator.sandbox.emulator import (  # noqa: E402
    IN_PROCESS_URL,
    ManualClock,
    RenderEmulator,
)
from render_rotator.sandbox.seed import seed_demo  # noqa: E402

SPEC = shared_dir() / "render-api" / "openapi.json"
RECORDED = recorded_dir()

# Where the published spec is stricter than what Render really sends, the recorded traffic
# wins; each entry names the evidence, and the test checks that evidence is still there.
SPEC_DEVIATIONS = {
    "'project' is a required property": "real postgres bodies carry no project key",
    "ipAllowList: None for not nullable": '"ipAllowList":null',
    "ipAllowList: None is not of type 'array'": '"ipAllowList":null',
    "commit: None for not nullable": '"commit":null',
    "commit: None is not of type 'object'": '"commit":null',
    "finishedAt: None for not nullable": '"finishedAt":null',
    "finishedAt: None is not of type 'string'": '"finishedAt":null',
    # serviceDetails is a oneOf without a discriminator: a web service's details also
    # match the private-service and worker schemas, so any real body "matches each of"
    "is valid under each of": "oneOf without discriminator",
}


class Recorder(httpx.WSGITransport):
    """The emulator's app driven in-process, keeping every exchange for validation."""

    def __init__(self, emu: RenderEmulator) -> None:
        super().__init__(app=emu.app)
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.exchanges.append((request, response))
        return response


def _as_werkzeug(request: httpx.Request, response: httpx.Response) -> tuple[Any, Any]:
    # the spec's server is https://api.render.com/v1: present the call as made there
    builder = EnvironBuilder(
        method=request.method,
        base_url="https://api.render.com",
        path=request.url.path,
        query_string=request.url.query.decode(),
        headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        data=request.content or None,
    )
    wz_request = WerkzeugOpenAPIRequest(Request(builder.get_environ()))
    wz_response = WerkzeugOpenAPIResponse(
        Response(
            response.content,
            status=response.status_code,
            headers=dict(response.headers),
            content_type=response.headers.get("content-type"),
        )
    )
    return wz_request, wz_response


def _reasons(exc: BaseException) -> list[str]:
    """The schema errors behind an openapi-core failure, one short line each."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        for error in getattr(item, "schema_errors", None) or ():
            path = "/".join(str(p) for p in error.absolute_path)
            found.append(f"{path}: {error.message}")
            stack.extend(getattr(error, "context", None) or ())
        stack.append(getattr(item, "__cause__", None))
    return found or [f"{type(exc).__name__}: {str(exc)[:200]}"]


def _unexplained(reasons: list[str]) -> list[str]:
    return [r for r in reasons if not any(known in r for known in SPEC_DEVIATIONS)]


def test_spec_deviations_are_backed_by_recorded_traffic() -> None:
    require_shared(RECORDED)
    text = "".join(p.read_text() for p in RECORDED.glob("*.yaml"))
    for evidence in set(SPEC_DEVIATIONS.values()):
        if evidence.startswith('"'):
            assert evidence in text, evidence
    assert '"project":' not in text


def test_rotation_calls_conform_to_renders_openapi_spec(
    pg: Cluster, request: pytest.FixtureRequest
) -> None:
    require_shared(SPEC)
    spec = openapi_core.OpenAPI.from_file_path(str(SPEC))
    clock = ManualClock()  # the client's waits move the emulator's clock: nothing sleeps
    emu = RenderEmulator(pg, provision_delay=0.1, deploy_delay=0.1, clock=clock)
    request.addfinalizer(emu.stop)
    recorder = Recorder(emu)
    with RenderClient(
        api_key=emu.api_key,
        base_url=IN_PROCESS_URL,
        transport=recorder,
        sleep=clock.sleep,
        clock=clock.time,
    ) as client:
        scenario = seed_demo(emu, rows=50, name="contract-db")
        owners = client.list_owners()
        old = client.get_postgres(scenario.postgres_id)
        client.list_postgres(name=old.name, owner_id=owners[0].id)
        client.get_connection_info(old.id)
        client.get_service(scenario.service_id)
        client.list_env_vars(scenario.service_id)
        client.get_env_var(scenario.service_id, "DATABASE_URL")
        client.set_env_var(scenario.service_id, "DATABASE_URL", "postgresql://u:p@h/db")
        client.get_env_group(scenario.env_group_id)
        client.set_env_group_var(scenario.env_group_id, "DATABASE_URL", "postgresql://u:p@h/db")
        client.suspend_service(scenario.service_id)
        client.resume_service(scenario.service_id)
        client.set_maintenance_mode(scenario.service_id, True)
        client.set_maintenance_mode(scenario.service_id, False)
        deploy = client.trigger_deploy(scenario.service_id)
        assert deploy is not None
        client.wait_for_deploy(scenario.service_id, deploy.id, timeout=30)
        again = client.trigger_deploy(scenario.service_id, deploy_mode="deploy_only")
        assert again is not None
        client.wait_for_deploy(scenario.service_id, again.id, timeout=30)
        client.list_deploys(scenario.service_id)
        client.list_deploys(scenario.service_id, limit=1, statuses=["live", "deactivated"])
        blueprint = emu.add_blueprint("contract", owners[0].id, [old.id, scenario.service_id])
        assert [b.id for b in client.list_blueprints(owner_id=owners[0].id)] == [blueprint]
        assert len(client.get_blueprint(blueprint).resources) == 2
        client.delete_postgres(old.id)
        new = client.create_postgres(
            name="contract-db-2",
            ownerId=owners[0].id,
            plan="free",
            version="18",
            region=old.region,
        )
        client.wait_for_postgres(new.id, timeout=30)
        client.delete_postgres(new.id)

    problems = []
    seen = set()
    for request, response in recorder.exchanges:
        if "/_sandbox/" in request.url.path:
            continue
        seen.add((request.method, response.status_code))
        wz_request, wz_response = _as_werkzeug(request, response)
        for what, check in (
            ("request", lambda rq=wz_request: spec.validate_request(rq)),
            ("response", lambda rq=wz_request, rs=wz_response: spec.validate_response(rq, rs)),
        ):
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - collect every deviation, then report
                unexplained = _unexplained(_reasons(exc))
                if unexplained:
                    problems.append(
                        f"{request.method} {request.url.path} -> {response.status_code}: "
                        f"{what}: {'; '.join(unexplained)[:400]}"
                    )
    assert len(recorder.exchanges) >= 20
    assert {("POST", 201), ("DELETE", 204), ("GET", 200)} <= seen
    assert problems == [], "\n".join(problems)
