"""The Render emulator against a real PostgreSQL cluster, spoken to with httpx: in-process
through its WSGI app on a manual clock (time is advanced, never waited for), and over a real
socket where the server itself is under test (405s for any method, dropped connections, the
control endpoint other processes use)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg2
import pytest

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox import Cluster, RenderEmulator, seed_demo
from render_rotator.sandbox.cluster import server_bins
from render_rotator.sandbox.emulator import (
    FREE_TIER_LIMIT_MESSAGE,
    IN_PROCESS_URL,
    POSTGRES_VERSIONS,
    ManualClock,
    expires_in,
)

PROVISION_DELAY = 0.2
DEPLOY_DELAY = 0.2


@pytest.fixture
def emu(pg: Cluster) -> Iterator[RenderEmulator]:
    """Not served on a socket: tests reach it through `api` (or `served` starts a server)."""
    e = RenderEmulator(
        pg, provision_delay=PROVISION_DELAY, deploy_delay=DEPLOY_DELAY, clock=ManualClock()
    )
    try:
        yield e
    finally:
        e.stop()


def _client(emu: RenderEmulator, **headers: str) -> httpx.Client:
    """An httpx client driving `emu` in-process (from 127.0.0.1, as WSGITransport says)."""
    transport = httpx.WSGITransport(app=emu.app)
    return httpx.Client(transport=transport, base_url=IN_PROCESS_URL, headers=headers)


@pytest.fixture
def api(emu: RenderEmulator) -> Iterator[httpx.Client]:
    with _client(emu, Authorization=f"Bearer {emu.api_key}") as client:
        yield client


@pytest.fixture
def served(emu: RenderEmulator) -> RenderEmulator:
    """The same emulator on a real socket (stopped with it)."""
    return emu.start()


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait(
    emu: RenderEmulator, fetch: Callable[[], Any], done: Callable[[Any], bool], limit: float = 5.0
) -> Any:
    """Fetch until `done`, moving the emulator's clock forward between fetches (no sleeping);
    gives up after `limit` emulated seconds and returns the last value."""
    moved = 0.0
    while True:
        value = fetch()
        if done(value) or moved >= limit:
            return value
        emu.advance_clock(0.05)
        moved += 0.05


def _create(api: httpx.Client, emu: RenderEmulator, **fields: Any) -> dict[str, Any]:
    body = {"name": "app-db", "ownerId": emu.default_owner_id, "plan": "free", "version": "18"}
    body.update(fields)
    response = api.post("/postgres", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _wait_available(emu: RenderEmulator, api: httpx.Client, pg_id: str) -> dict[str, Any]:
    data: dict[str, Any] = _wait(
        emu, lambda: api.get(f"/postgres/{pg_id}").json(), lambda d: d["status"] == "available"
    )
    assert data["status"] == "available"
    return data


def _connect(url: str) -> Any:
    return psycopg2.connect(url, connect_timeout=5)


def _role_exists(pg: Cluster, role: str) -> bool:
    return bool(pg.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"))


def _db_exists(pg: Cluster, db: str) -> bool:
    return bool(pg.query(f"SELECT 1 FROM pg_database WHERE datname = '{db}'"))


# -- auth and headers -------------------------------------------------------------------------


def test_every_call_needs_the_bearer_key(emu: RenderEmulator) -> None:
    with _client(emu) as anon:
        missing = anon.get("/postgres")
        wrong = anon.get("/postgres", headers={"Authorization": "Bearer not-the-key"})
        bare = anon.get("/postgres", headers={"Authorization": emu.api_key})
        good = anon.get("/postgres", headers={"Authorization": f"Bearer {emu.api_key}"})
    for response in (missing, wrong, bare):
        assert response.status_code == 401
        body = response.json()
        assert body["message"] == "unauthorized"
        assert set(body) == {"id", "message"}
    assert good.status_code == 200
    assert good.json() == []
    assert [r[2] for r in emu.requests] == [401, 401, 401, 200]


def test_ratelimit_headers_and_content_type(api: httpx.Client) -> None:
    first = api.get("/owners")
    second = api.get("/owners")
    for response in (first, second):
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert int(response.headers["Ratelimit-Limit"]) == 400
        assert 0 <= int(response.headers["Ratelimit-Reset"]) <= 60
    assert (
        int(second.headers["Ratelimit-Remaining"]) == int(first.headers["Ratelimit-Remaining"]) - 1
    )
    owners = first.json()
    assert len(owners) == 1 and set(owners[0]) == {"cursor", "owner"}
    assert set(owners[0]["owner"]) == {"email", "id", "name", "type"}
    assert owners[0]["owner"]["id"].startswith("tea-")
    create_bucket = api.post("/postgres", json={})
    assert create_bucket.status_code == 400
    assert create_bucket.headers["Ratelimit-Limit"] == "20"


def test_every_answer_carries_a_render_request_id(emu: RenderEmulator, api: httpx.Client) -> None:
    with _client(emu) as anon:
        unauthorized = anon.get("/postgres")
    answers = [
        api.get("/owners"),
        api.get("/postgres/dpg-nope-a"),
        api.post("/postgres", json={}),
        api.delete("/owners"),
        unauthorized,
    ]
    ids = [response.headers.get("Render-Request-Id") for response in answers]
    for request_id in ids:
        # Render's shape, e.g. api-67697cb9cc-xcbhc/vgcYLi38GW-154027
        assert request_id is not None
        assert re.fullmatch(r"api-[a-z0-9-]+/[A-Za-z0-9]{10}-\d+", request_id), request_id
    assert len(set(ids)) == len(ids)


def test_unsupported_methods_answer_405_never_500(served: RenderEmulator) -> None:
    emu = served  # the real server must take any method, not only the app
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.base_url, timeout=5, headers=headers) as api:
        for method, path in [
            ("DELETE", "/owners"),
            ("PUT", "/postgres"),
            ("POST", "/services/srv-x/env-vars/KEY"),
            ("OPTIONS", "/postgres"),
            ("HEAD", "/postgres"),
            ("TRACE", "/services"),
            ("PROPFIND", "/env-groups"),
            ("M-SEARCH", "/owners"),
        ]:
            response = api.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.headers["Render-Request-Id"]
            if method != "HEAD":
                assert set(response.json()) == {"id", "message"}
            allowed = {m.strip() for m in response.headers["Allow"].split(",")}
            assert method not in allowed and allowed
        assert api.request("PROPFIND", "/nowhere").status_code == 404
        # the connection still works after a HEAD without a body
        assert api.get("/owners").status_code == 200
    assert all(status < 500 for _m, _p, status in emu.requests)


def test_unknown_ids_answer_404_with_renders_body(api: httpx.Client) -> None:
    for path in ("/postgres/dpg-nope-a", "/services/srv-nope", "/env-groups/evg-nope"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"message": f"not found: {path.rsplit('/', 1)[1]}"}
        assert "Ratelimit-Remaining" in response.headers


# -- postgres --------------------------------------------------------------------------------


def test_free_postgres_is_real_and_owned_by_a_non_superuser(
    emu: RenderEmulator, api: httpx.Client, pg: Cluster
) -> None:
    created = _create(api, emu, name="shop-db", databaseName="shop", databaseUser="shop")
    assert created["status"] == "creating"
    assert created["id"].startswith("dpg-") and created["id"].endswith("-a")
    assert created["plan"] == "free" and created["version"] == "18"
    assert created["databaseName"].startswith("shop_") and created["databaseUser"].startswith(
        "shop_"
    )
    assert _parse_ts(created["expiresAt"]) - _parse_ts(created["createdAt"]) == timedelta(days=30)
    # no ipAllowList given: Render's default opens the database to everywhere
    assert created["ipAllowList"] == [{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}]
    assert created["suspended"] == "not_suspended"

    ready = _wait_available(emu, api, created["id"])
    assert ready["createdAt"] == created["createdAt"]

    info = api.get(f"/postgres/{created['id']}/connection-info").json()
    assert set(info) == {
        "password",
        "internalConnectionString",
        "externalConnectionString",
        "psqlCommand",
    }
    assert "sslmode" not in info["externalConnectionString"]
    assert info["internalConnectionString"] != info["externalConnectionString"]
    assert info["password"] in info["psqlCommand"]

    conn = _connect(info["externalConnectionString"])
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            cur.execute("INSERT INTO notes VALUES (1, 'hello')")
            cur.execute("SELECT body FROM notes")
            assert cur.fetchall() == [("hello",)]
            cur.execute("SELECT current_user, current_database()")
            assert cur.fetchone() == (created["databaseUser"], created["databaseName"])
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CREATE ROLE sneaky")
    finally:
        conn.close()

    role = pg.query(
        "SELECT rolsuper, rolcreaterole, rolcanlogin FROM pg_roles "
        f"WHERE rolname = '{created['databaseUser']}'"
    )
    assert role == [(False, False, True)]
    owner = pg.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database "
        f"WHERE datname = '{created['databaseName']}'"
    )
    assert owner == [(created["databaseUser"],)]
    # The internal string reaches the same database (internal_reachable defaults to True)
    # through the socket, the sandbox's private network, where TLS is not needed.
    with _connect(info["internalConnectionString"]) as conn2, conn2.cursor() as cur:
        cur.execute("SELECT count(*) FROM notes")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (False,)
    conn2.close()


def _external_and_internal(
    api: httpx.Client, emu: RenderEmulator
) -> tuple[dict[str, Any], str, str]:
    created = _create(api, emu, name="strict", plan="basic_256mb")
    info = api.get(f"/postgres/{created['id']}/connection-info").json()
    return created, info["externalConnectionString"], info["internalConnectionString"]


def test_external_strings_connect_over_tls_only(emu: RenderEmulator, api: httpx.Client) -> None:
    created, external, _internal = _external_and_internal(api, emu)
    # Render's shape: no sslmode in the string, yet only TLS gets in.
    assert "sslmode" not in external and "?" not in external
    with _connect(external + "?sslmode=require") as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl_on, protocol = cur.fetchone()
        assert ssl_on is True and protocol.startswith("TLSv1.")
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        _connect(external + "?sslmode=disable")
    assert created["version"] == str(emu.cluster.major)


def test_a_plain_connection_to_the_external_address_is_refused_for_any_user(
    emu: RenderEmulator, pg: Cluster
) -> None:
    plain = PgURL.parse(pg.admin_url).psycopg2_kwargs(5) | {"sslmode": "disable"}
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(**plain)


def test_internal_string_checks_the_password(emu: RenderEmulator, api: httpx.Client) -> None:
    _created, _external, internal = _external_and_internal(api, emu)
    parsed = PgURL.parse(internal)
    assert parsed.host == "localhost" and dict(parsed.params)["host"] == str(emu.cluster.socket_dir)
    wrong = internal.replace(f":{parsed.password}@", ":not-the-password@")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _connect(wrong)


def test_each_database_runs_on_the_major_it_reports(emu: RenderEmulator, api: httpx.Client) -> None:
    others = [m for m in server_bins() if m != emu.cluster.major]
    if not others:
        pytest.skip("only one PostgreSQL server major is installed")
    major = str(max(others))
    created = _create(api, emu, name="older", plan="basic_256mb", version=major)
    assert created["version"] == major
    info = api.get(f"/postgres/{created['id']}/connection-info").json()
    for url in (info["externalConnectionString"] + "?sslmode=require",
                info["internalConnectionString"]):  # fmt: skip
        with _connect(url) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            (num,) = cur.fetchone()
            assert int(num) // 10000 == int(major)
        conn.close()
    # the same major again reuses its cluster
    again = _create(api, emu, name="older-2", plan="basic_256mb", version=major)
    second = api.get(f"/postgres/{again['id']}/connection-info").json()
    port = PgURL.parse(info["externalConnectionString"]).port
    assert PgURL.parse(second["externalConnectionString"]).port == port != emu.cluster.port


def test_clusters_it_started_stop_with_it(pg: Cluster) -> None:
    others = [m for m in server_bins() if m != pg.major]
    if not others:
        pytest.skip("only one PostgreSQL server major is installed")
    emu = RenderEmulator(pg, provision_delay=0).start()
    try:
        created = emu.create_postgres(name="other-major", plan="free", version=str(others[0]))
        started = emu.provisioner.cluster_for_version(created["version"])
        assert started is not pg and started.base_dir is not None
        data_dir = started.base_dir
    finally:
        emu.stop()
    assert not data_dir.exists()  # stopped and removed; the cluster it was given runs on
    assert pg.query("SELECT 1") == [(1,)]


def test_a_version_it_cannot_serve_is_refused_with_400(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    missing = [v for v in POSTGRES_VERSIONS if int(v) not in server_bins()]
    if not missing:
        pytest.skip("every Render major is installed here")
    response = api.post(
        "/postgres",
        json={"name": "x", "ownerId": emu.default_owner_id, "plan": "free", "version": missing[0]},
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"id", "message"}
    assert f'version "{missing[0]}" is not available' in body["message"]
    assert str(emu.cluster.major) in body["message"]
    assert emu.postgres_ids() == []


def test_the_emulator_refuses_a_cluster_without_tls() -> None:
    plain = Cluster(tls=False)  # never started: the check comes first
    with pytest.raises(ValueError, match="TLS"):
        RenderEmulator(plain)


def test_internal_strings_can_look_exactly_like_renders(pg: Cluster) -> None:
    with RenderEmulator(pg, provision_delay=0, internal_reachable=False) as emu:
        created = emu.create_postgres(name="exact", plan="basic_256mb", version="18")
        info = emu.connection_info(created["id"])
        internal = info["internalConnectionString"]
        assert internal.endswith(f"@{created['id']}/{created['databaseName']}")
        resolved = emu.resolve_internal_url(internal)
        assert resolved != internal
        conn = _connect(resolved)
        conn.close()
        assert emu.resolve_internal_url("postgresql://u:p@elsewhere:5432/db") == (
            "postgresql://u:p@elsewhere:5432/db"
        )


def test_one_free_database_per_owner(emu: RenderEmulator, api: httpx.Client, pg: Cluster) -> None:
    first = _create(api, emu, name="first")
    refused = api.post(
        "/postgres",
        json={"name": "second", "ownerId": emu.default_owner_id, "plan": "free", "version": "18"},
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == FREE_TIER_LIMIT_MESSAGE
    assert len(api.get("/postgres").json()) == 1

    other_owner = emu.add_owner("Other", "other@example.com")
    elsewhere = _create(api, emu, name="theirs", ownerId=other_owner)
    paid = _create(api, emu, name="paid", plan="basic_256mb")
    assert "expiresAt" not in paid

    assert api.delete(f"/postgres/{first['id']}").status_code == 204
    again = _create(api, emu, name="second")
    assert again["plan"] == "free"
    for item in (elsewhere, paid, again):
        assert api.delete(f"/postgres/{item['id']}").status_code == 204


def test_delete_ends_sessions_and_drops_database_and_role(
    emu: RenderEmulator, api: httpx.Client, pg: Cluster
) -> None:
    created = _create(api, emu, name="doomed")
    url = api.get(f"/postgres/{created['id']}/connection-info").json()["externalConnectionString"]
    session = _connect(url)
    response = api.delete(f"/postgres/{created['id']}")
    assert response.status_code == 204
    assert response.content == b"" and "Content-Type" not in response.headers
    assert api.get(f"/postgres/{created['id']}").status_code == 404
    with pytest.raises(psycopg2.Error), session.cursor() as cur:
        cur.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg2.OperationalError):
        _connect(url)
    assert not _db_exists(pg, created["databaseName"])
    assert not _role_exists(pg, created["databaseUser"])
    assert api.delete(f"/postgres/{created['id']}").status_code == 404


def test_create_validation_follows_the_spec(emu: RenderEmulator, api: httpx.Client) -> None:
    owner = emu.default_owner_id
    cases = [
        ({"ownerId": owner, "plan": "free", "version": "18"}, "name"),
        ({"name": "x", "plan": "free", "version": "18"}, "ownerId"),
        ({"name": "x", "ownerId": owner, "version": "18"}, "plan"),
        ({"name": "x", "ownerId": owner, "plan": "free"}, "version"),
        ({"name": "x", "ownerId": owner, "plan": "free", "version": "10"}, "version"),
        ({"name": "x", "ownerId": owner, "plan": "gigantic", "version": "18"}, "plan"),
        ({"name": "x", "ownerId": owner, "plan": "starter", "version": "18"}, "Legacy"),
        ({"name": "x", "ownerId": owner, "plan": "free", "version": "18", "region": "mars"},
         "region"),
    ]  # fmt: skip
    for body, word in cases:
        response = api.post("/postgres", json=body)
        assert response.status_code == 400, body
        assert word in response.json()["message"]
    assert api.post("/postgres", content=b"{not json").status_code == 400
    unknown_owner = api.post(
        "/postgres", json={"name": "x", "ownerId": "tea-nobody", "plan": "free", "version": "18"}
    )
    assert unknown_owner.status_code == 404
    assert emu.postgres_ids() == []


def test_versions_patch_and_list_filters(emu: RenderEmulator, api: httpx.Client) -> None:
    a = _create(api, emu, name="alpha", plan="basic_1gb", version="18")
    b = _create(api, emu, name="beta", plan="pro_4gb", version="18")
    only_beta = api.get("/postgres", params={"name": "beta"}).json()
    assert [item["postgres"]["id"] for item in only_beta] == [b["id"]]
    both = api.get("/postgres", params={"name": "alpha,beta"}).json()
    assert {item["postgres"]["id"] for item in both} == {a["id"], b["id"]}
    assert api.get("/postgres", params={"ownerId": "tea-other"}).json() == []

    patched = api.patch(
        f"/postgres/{a['id']}",
        json={
            "name": "alpha-2",
            "ipAllowList": [{"cidrBlock": "10.0.0.0/8", "description": "vpn"}],
        },
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "alpha-2"
    assert patched.json()["ipAllowList"] == [{"cidrBlock": "10.0.0.0/8", "description": "vpn"}]
    bad = api.patch(f"/postgres/{a['id']}", json={"ipAllowList": [{"cidrBlock": "nope"}]})
    assert bad.status_code == 400
    to_free = api.patch(f"/postgres/{a['id']}", json={"plan": "free"})
    assert to_free.status_code == 400

    soon = _create(api, emu, name="soon")
    emu.set_expires_at(soon["id"], expires_in(3))
    left = _parse_ts(api.get(f"/postgres/{soon['id']}").json()["expiresAt"]) - datetime.now(UTC)
    assert timedelta(days=2, hours=23) < left <= timedelta(days=3)


def test_postgres_suspend_blocks_logins_until_resume(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    created = _create(api, emu, name="sleepy")
    _wait_available(emu, api, created["id"])
    url = api.get(f"/postgres/{created['id']}/connection-info").json()["externalConnectionString"]
    suspended = api.post(f"/postgres/{created['id']}/suspend")
    assert suspended.status_code == 202 and suspended.content == b""
    state = api.get(f"/postgres/{created['id']}").json()
    assert (state["status"], state["suspended"], state["suspenders"]) == (
        "suspended",
        "suspended",
        ["user"],
    )
    with pytest.raises(psycopg2.OperationalError):
        _connect(url)
    assert api.post(f"/postgres/{created['id']}/resume").status_code == 202
    assert api.get(f"/postgres/{created['id']}").json()["status"] == "available"
    _connect(url).close()


def test_stop_drops_everything_it_created(pg: Cluster) -> None:
    emu = RenderEmulator(pg, provision_delay=0).start()
    port = emu.port
    created = emu.create_postgres(name="leftover", plan="free", version="18")
    assert _db_exists(pg, created["databaseName"])
    emu.stop()
    assert not _db_exists(pg, created["databaseName"])
    assert not _role_exists(pg, created["databaseUser"])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/owners", timeout=1)


# -- pagination -------------------------------------------------------------------------------


def test_cursor_pagination_over_several_pages(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("paged")
    all_vars = [{"key": f"K{i:02d}", "value": str(i)} for i in range(25)]
    assert api.put(f"/services/{sid}/env-vars", json=all_vars).status_code == 200

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/services/{sid}/env-vars", params=params).json()
        pages += 1
        if not page:
            break
        assert all(set(item) == {"envVar", "cursor"} for item in page)
        seen.extend(item["envVar"]["key"] for item in page)
        cursor = page[-1]["cursor"]
    assert seen == [v["key"] for v in all_vars]
    assert pages == 4  # 10 + 10 + 5, then the empty page after the last cursor
    assert len(api.get(f"/services/{sid}/env-vars").json()) == 20  # default limit
    assert len(api.get(f"/services/{sid}/env-vars", params={"limit": 500}).json()) == 25
    assert api.get(f"/services/{sid}/env-vars", params={"limit": 0}).status_code == 400
    assert api.get(f"/services/{sid}/env-vars", params={"cursor": "garbage!"}).status_code == 400

    for i in range(3):
        emu.add_service(f"svc-{i}")
    first = api.get("/services", params={"limit": 2}).json()
    rest = api.get("/services", params={"limit": 2, "cursor": first[-1]["cursor"]}).json()
    ids = [item["service"]["id"] for item in first + rest]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert set(first[0]) == {"cursor", "service"}


# -- env vars and env groups ------------------------------------------------------------------


def test_service_env_vars(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web", env_vars={"DATABASE_URL": "postgresql://old"})
    assert api.get(f"/services/{sid}/env-vars/DATABASE_URL").json() == {
        "key": "DATABASE_URL",
        "value": "postgresql://old",
    }
    put = api.put(f"/services/{sid}/env-vars/DATABASE_URL", json={"value": "postgresql://new"})
    assert put.status_code == 200 and put.json()["value"] == "postgresql://new"
    added = api.put(f"/services/{sid}/env-vars/SECRET", json={"generateValue": True})
    assert len(added.json()["value"]) == 44
    listed = api.get(f"/services/{sid}/env-vars").json()
    assert [item["envVar"]["key"] for item in listed] == ["DATABASE_URL", "SECRET"]
    assert emu.env_vars(sid)["DATABASE_URL"] == "postgresql://new"

    assert api.delete(f"/services/{sid}/env-vars/SECRET").status_code == 204
    missing = api.get(f"/services/{sid}/env-vars/SECRET")
    assert missing.status_code == 404 and missing.json() == {"message": "not found: SECRET"}
    assert api.delete(f"/services/{sid}/env-vars/SECRET").status_code == 404
    assert api.put(f"/services/{sid}/env-vars/X", json={"nope": 1}).status_code == 400

    replaced = api.put(f"/services/{sid}/env-vars", json=[{"key": "ONLY", "value": "1"}])
    assert [item["envVar"] for item in replaced.json()] == [{"key": "ONLY", "value": "1"}]
    assert emu.env_vars(sid) == {"ONLY": "1"}
    assert api.put(f"/services/{sid}/env-vars", content=b"null").json() == []
    assert emu.env_vars(sid) == {}


def test_env_group_vars(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web")
    gid = emu.add_env_group(
        "shared", env_vars={"DATABASE_URL": "postgresql://old"}, service_ids=[sid]
    )
    group = api.get(f"/env-groups/{gid}").json()
    assert group["envVars"] == [{"key": "DATABASE_URL", "value": "postgresql://old"}]
    assert group["serviceLinks"] == [{"id": sid, "name": "web", "type": "web"}]

    updated = api.put(
        f"/env-groups/{gid}/env-vars/DATABASE_URL", json={"value": "postgresql://new"}
    )
    assert updated.status_code == 200
    assert updated.json()["envVars"] == [{"key": "DATABASE_URL", "value": "postgresql://new"}]
    added = api.put(f"/env-groups/{gid}/env-vars/EXTRA", json={"value": "1"}).json()
    assert [v["key"] for v in added["envVars"]] == ["EXTRA", "DATABASE_URL"]  # newest first

    assert api.delete(f"/env-groups/{gid}/env-vars/EXTRA").status_code == 204
    assert emu.env_group_vars(gid) == {"DATABASE_URL": "postgresql://new"}
    assert api.delete(f"/env-groups/{gid}/env-vars/EXTRA").status_code == 404
    assert api.get(f"/env-groups/{gid}/env-vars/DATABASE_URL").json()["value"] == (
        "postgresql://new"
    )


# -- services ---------------------------------------------------------------------------------


def test_service_suspend_and_resume(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web")
    response = api.post(f"/services/{sid}/suspend")
    assert response.status_code == 202 and response.content == b""
    service = api.get(f"/services/{sid}").json()
    assert service["suspended"] == "suspended" and service["suspenders"] == ["user"]
    listed = api.get("/services", params={"suspended": "suspended"}).json()
    assert [item["service"]["id"] for item in listed] == [sid]
    assert api.post(f"/services/{sid}/resume").status_code == 202
    service = api.get(f"/services/{sid}").json()
    assert service["suspended"] == "not_suspended" and service["suspenders"] == []
    assert api.post("/services/srv-missing/suspend").status_code == 404


def test_maintenance_mode_patch(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web")
    on = api.patch(
        f"/services/{sid}",
        json={"serviceDetails": {"maintenanceMode": {"enabled": True, "uri": ""}}},
    )
    assert on.status_code == 200
    assert on.json()["serviceDetails"]["maintenanceMode"] == {"enabled": True, "uri": ""}
    assert api.get(f"/services/{sid}").json()["serviceDetails"]["maintenanceMode"]["enabled"]
    renamed = api.patch(f"/services/{sid}", json={"name": "web-2"}).json()
    assert renamed["name"] == "web-2"
    assert renamed["serviceDetails"]["maintenanceMode"]["enabled"] is True
    off = api.patch(
        f"/services/{sid}", json={"serviceDetails": {"maintenanceMode": {"enabled": False}}}
    )
    assert off.json()["serviceDetails"]["maintenanceMode"] == {"enabled": False, "uri": ""}
    bad = api.patch(
        f"/services/{sid}", json={"serviceDetails": {"maintenanceMode": {"enabled": "yes"}}}
    )
    assert bad.status_code == 400


# -- deploys ----------------------------------------------------------------------------------


def test_deploy_goes_live_and_deactivates_the_previous_one(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    sid = emu.add_service("web")
    before = api.get(f"/services/{sid}/deploys").json()
    assert len(before) == 1 and before[0]["deploy"]["status"] == "live"
    created = api.post(f"/services/{sid}/deploys", json={})
    assert created.status_code == 201
    deploy = created.json()
    assert deploy["id"].startswith("dep-")
    assert deploy["status"] == "update_in_progress" and deploy["trigger"] == "api"
    assert deploy["finishedAt"] is None

    done = _wait(
        emu,
        lambda: api.get(f"/services/{sid}/deploys/{deploy['id']}").json(),
        lambda d: d["status"] == "live",
    )
    assert done["status"] == "live" and done["finishedAt"] is not None
    listed = api.get(f"/services/{sid}/deploys").json()
    assert [item["deploy"]["id"] for item in listed][0] == deploy["id"]  # newest first
    assert listed[1]["deploy"]["status"] == "deactivated"
    assert api.get(f"/services/{sid}/deploys/dep-missing").status_code == 404


def test_git_backed_deploy_builds_with_a_commit(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("git-web", repo="https://github.com/example/app")
    service = api.get(f"/services/{sid}").json()
    assert service["repo"] == "https://github.com/example/app" and "imagePath" not in service
    deploy = api.post(f"/services/{sid}/deploys", json={"commitId": "abc123"}).json()
    assert deploy["status"] == "created" and deploy["commit"]["id"] == "abc123"
    statuses = set()

    def poll() -> dict[str, Any]:
        data: dict[str, Any] = api.get(f"/services/{sid}/deploys/{deploy['id']}").json()
        statuses.add(data["status"])
        return data

    assert _wait(emu, poll, lambda d: d["status"] == "live")["status"] == "live"
    assert "build_in_progress" in statuses or "update_in_progress" in statuses


def test_deploy_of_a_suspended_service_is_allowed(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web", suspended=True)
    assert api.post(f"/services/{sid}/deploys", json={}).status_code == 201
    assert api.get(f"/services/{sid}").json()["suspended"] == "suspended"


# -- faults -----------------------------------------------------------------------------------


def test_rate_limit_fault(emu: RenderEmulator, api: httpx.Client) -> None:
    emu.faults.rate_limit(2, retry_after=1, path_prefix="/postgres", method="GET")
    assert api.get("/owners").status_code == 200  # other paths are untouched
    for _ in range(2):
        limited = api.get("/postgres")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        assert limited.headers["Ratelimit-Remaining"] == "0"
        assert "message" in limited.json()
    assert api.get("/postgres").status_code == 200
    assert [r[2] for r in emu.requests[-3:]] == [429, 429, 200]


def test_server_error_fault_and_losing_only_the_answer(
    emu: RenderEmulator, api: httpx.Client
) -> None:
    sid = emu.add_service("web")
    emu.faults.server_error(1, status=503)
    failed = api.get(f"/services/{sid}")
    assert failed.status_code == 503 and failed.json()["message"] == "service unavailable"
    assert "Retry-After" not in failed.headers  # the client backs off on its own
    assert api.get(f"/services/{sid}").status_code == 200

    emu.faults.server_error(1, status=503, retry_after=0.05)
    assert emu.faults.describe()["rules"][0]["retry_after"] == 0.05
    told = api.get(f"/services/{sid}")
    assert told.status_code == 503 and told.headers["Retry-After"] == "0.05"
    with pytest.raises(ValueError):
        emu.faults.server_error(1, retry_after=-1)

    emu.faults.server_error(1, status=500, method="PUT", after_processing=True)
    lost = api.put(f"/services/{sid}/env-vars/KEY", json={"value": "applied"})
    assert lost.status_code == 500
    assert emu.env_vars(sid)["KEY"] == "applied"

    emu.faults.server_error(1, path_prefix="/postgres")
    refused = api.post(
        "/postgres",
        json={"name": "x", "ownerId": emu.default_owner_id, "plan": "free", "version": "18"},
    )
    assert refused.status_code == 503
    assert emu.postgres_ids() == []  # nothing was created behind the error
    with pytest.raises(ValueError):
        emu.faults.server_error(1, status=404)


def test_latency_passes_on_the_emulators_clock(emu: RenderEmulator, api: httpx.Client) -> None:
    emu.faults.latency(0.3, path_prefix="/owners")
    before = emu.now()
    assert api.get("/owners").status_code == 200
    assert emu.now() - before == pytest.approx(0.3)
    assert api.get("/services").status_code == 200  # another path: no delay
    assert emu.now() - before == pytest.approx(0.3)
    emu.faults.latency(0)
    api.get("/owners")
    assert emu.now() - before == pytest.approx(0.3)


def test_a_dropped_connection_gets_no_answer(served: RenderEmulator) -> None:
    emu = served
    emu.faults.drop_connection(1)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=5) as api:
        with pytest.raises(httpx.RemoteProtocolError):
            api.get("/owners")
        assert api.get("/owners").status_code == 200


def test_failed_and_queued_deploy_faults(emu: RenderEmulator, api: httpx.Client) -> None:
    sid = emu.add_service("web")
    other = emu.add_service("other")
    emu.faults.fail_next_deploy(service_id=sid, status="update_failed")
    ok = api.post(f"/services/{other}/deploys", json={}).json()  # other service: unaffected
    bad = api.post(f"/services/{sid}/deploys", json={}).json()
    final = _wait(
        emu,
        lambda: api.get(f"/services/{sid}/deploys/{bad['id']}").json(),
        lambda d: d["status"] not in ("update_in_progress", "created"),
    )
    assert final["status"] == "update_failed" and final["finishedAt"] is not None
    assert (
        _wait(
            emu,
            lambda: api.get(f"/services/{other}/deploys/{ok['id']}").json(),
            lambda d: d["status"] == "live",
        )["status"]
        == "live"
    )
    # The failed deploy leaves the previous one live.
    statuses = [i["deploy"]["status"] for i in api.get(f"/services/{sid}/deploys").json()]
    assert statuses == ["update_failed", "live"]

    emu.faults.queue_deploys(1)
    queued = api.post(f"/services/{sid}/deploys", json={})
    assert queued.status_code == 202 and queued.content == b""
    newest = api.get(f"/services/{sid}/deploys", params={"limit": 1}).json()[0]["deploy"]
    assert newest["status"] == "queued" and newest["trigger"] == "api"
    assert (
        _wait(
            emu,
            lambda: api.get(f"/services/{sid}/deploys/{newest['id']}").json(),
            lambda d: d["status"] == "live",
        )["status"]
        == "live"
    )


def test_real_rate_limits_can_be_enforced(pg: Cluster) -> None:
    emu = RenderEmulator(pg, deploy_delay=0, enforce_rate_limits=True, clock=ManualClock())
    sid = emu.add_service("web")
    with _client(emu, Authorization=f"Bearer {emu.api_key}") as api:
        answers = [api.post(f"/services/{sid}/deploys", json={}) for _ in range(11)]
        assert [r.status_code for r in answers] == [201] * 10 + [429]
        assert [r.headers["Ratelimit-Remaining"] for r in answers[-2:]] == ["0", "0"]
        assert int(answers[-1].headers["Retry-After"]) == 60  # the clock has not moved
        emu.advance_clock(60)  # a new window
        assert api.post(f"/services/{sid}/deploys", json={}).status_code == 201


def test_never_available_fault(emu: RenderEmulator, api: httpx.Client) -> None:
    emu.faults.never_available(True)
    created = _create(api, emu, name="stuck")
    emu.advance_clock(PROVISION_DELAY * 100)
    assert api.get(f"/postgres/{created['id']}").json()["status"] == "creating"
    emu.faults.clear()
    assert api.get(f"/postgres/{created['id']}").json()["status"] == "available"


def test_control_endpoint_drives_faults_from_another_process(served: RenderEmulator) -> None:
    emu = served
    auth = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(timeout=5) as http:
        armed = http.post(
            emu.control_url,  # loopback: no key needed
            json={"fault": "server_error", "n": 1, "status": 502, "path_prefix": "/owners"},
        )
        assert armed.status_code == 200
        assert armed.json()["faults"]["rules"][0]["status"] == 502
        assert http.get(emu.base_url + "/owners", headers=auth).status_code == 502
        assert http.get(emu.base_url + "/owners", headers=auth).status_code == 200

        both = http.post(
            emu.root_url + "/_sandbox/faults",
            json=[{"fault": "rate_limit", "n": None}, {"fault": "never_available"}],
        )
        assert both.json()["faults"]["never_available"] is True
        assert http.get(emu.base_url + "/owners", headers=auth).status_code == 429
        assert http.get(emu.base_url + "/owners", headers=auth).status_code == 429
        cleared = http.delete(emu.control_url).json()["faults"]
        assert cleared["rules"] == [] and cleared["never_available"] is False
        assert http.get(emu.base_url + "/owners", headers=auth).status_code == 200

        assert http.post(emu.control_url, json={"fault": "explode"}).status_code == 400
        assert http.post(emu.control_url, json={"fault": "latency", "bogus": 1}).status_code == 400

        state = http.get(emu.base_url + "/_sandbox/state").json()
        assert set(state) == {"owners", "postgres", "services", "envGroups"}
        logged = http.get(emu.base_url + "/_sandbox/requests").json()["requests"]
        assert ["GET", "/owners", 502] in logged
    # Control calls are neither faulted nor logged as API requests.
    assert all(not path.startswith("/_sandbox") for _, path, _ in emu.requests)


# -- seeding ------------------------------------------------------------------------------------


def test_seed_demo_builds_a_wired_scenario(emu: RenderEmulator, api: httpx.Client) -> None:
    scenario = seed_demo(emu, rows=500)
    assert scenario.row_counts == {"users": 100, "orders": 400}
    pg = api.get(f"/postgres/{scenario.postgres_id}").json()
    assert pg["plan"] == "free" and pg["status"] == "available"
    info = api.get(f"/postgres/{scenario.postgres_id}/connection-info").json()
    assert scenario.database_url == info["internalConnectionString"]
    assert emu.env_vars(scenario.service_id)["DATABASE_URL"] == scenario.database_url
    assert emu.env_group_vars(scenario.env_group_id)["DATABASE_URL"] == scenario.database_url
    group = api.get(f"/env-groups/{scenario.env_group_id}").json()
    assert group["serviceLinks"][0]["id"] == scenario.service_id
    assert info["password"] not in repr(scenario)

    with _connect(scenario.external_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone() == (100,)
        cur.execute("SELECT count(*), count(DISTINCT user_id) FROM orders")
        assert cur.fetchone() == (400, 100)
        cur.execute("SELECT sum(orders) FROM user_order_totals")
        assert cur.fetchone() == (400,)
        cur.execute("SELECT order_total(1) > 0, last_value FROM invoice_no_seq")
        assert cur.fetchone() == (True, 1399)
        cur.execute("SELECT count(*) FROM users WHERE profile->>'plan' = 'pro'")
        assert cur.fetchone() == (33,)
    conn.close()
    # A second free database is refused: the rotation must fall back to delete-first.
    refused = api.post(
        "/postgres",
        json={"name": "next", "ownerId": scenario.owner_id, "plan": "free", "version": "18"},
    )
    assert refused.status_code == 400


# -- the real client against the emulator ------------------------------------------------------


def test_render_client_end_to_end(emu: RenderEmulator) -> None:
    from render_rotator.errors import ConflictError
    from render_rotator.render.client import RenderClient, is_free_tier_refusal

    owner = emu.default_owner_id
    sid = emu.add_service("web", env_vars={"DATABASE_URL": "postgresql://old"})
    clock = emu.clock  # the client's waits move the emulator's clock: nothing sleeps
    with RenderClient(
        api_key=emu.api_key,
        base_url=IN_PROCESS_URL,
        timeout=10,
        transport=httpx.WSGITransport(app=emu.app),
        sleep=clock.sleep,
        clock=clock.time,
    ) as client:
        assert [o.id for o in client.list_owners()] == [owner]
        created = client.create_postgres(
            name="client-db", owner_id=owner, plan="free", version="18"
        )
        ready = client.wait_for_postgres(created.id, timeout=10, poll_interval=0.05)
        assert ready.status_raw == "available"
        info = client.get_connection_info(created.id)
        with _connect(info.external_connection_string) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('via client')")
            cur.execute("SELECT v FROM t")
            assert cur.fetchall() == [("via client",)]
        conn.close()

        with pytest.raises(ConflictError) as refused:
            client.create_postgres(name="second", owner_id=owner, plan="free", version="18")
        assert is_free_tier_refusal(refused.value)

        client.set_env_var(sid, "DATABASE_URL", info.internal_connection_string)
        assert emu.env_vars(sid)["DATABASE_URL"] == info.internal_connection_string
        emu.faults.rate_limit(1, retry_after=0, path_prefix=f"/services/{sid}/deploys")
        deploy = client.trigger_deploy(sid)
        assert deploy is not None
        finished = client.wait_for_deploy(sid, deploy.id, timeout=10, poll_interval=0.05)
        assert finished.status_raw == "live"

        client.delete_postgres(created.id)
        assert created.id not in emu.postgres_ids()
    assert ("POST", f"/services/{sid}/deploys", 429) in emu.requests
