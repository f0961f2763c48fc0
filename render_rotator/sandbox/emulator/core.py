"""`RenderEmulator`: the state of one emulated Render account, its Python API for tests, and
the request pipeline (auth, faults, rate limits, routing) every HTTP request goes through."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator.clock import Clock, SystemClock
from render_rotator.sandbox.emulator.faults import Faults, fault_reply
from render_rotator.sandbox.emulator.handlers import api_routes, control, deploys, postgres
from render_rotator.sandbox.emulator.handlers.blueprints import resource
from render_rotator.sandbox.emulator.handlers.services import service_json
from render_rotator.sandbox.emulator.http import (
    RATE_BUCKETS,
    RATE_WINDOW,
    SECURITY_HEADERS,
    EmulatorAPIError,
    RateLimiter,
    Reply,
    Request,
    Router,
    error_reply,
    not_found,
    request_id,
)
from render_rotator.sandbox.emulator.provisioning import Provisioner
from render_rotator.sandbox.emulator.records import (
    API_PREFIX,
    CONTROL_PREFIX,
    DEFAULT_IMAGE,
    DEPLOY_FAILURE_STATUSES,
    SERVICE_TYPES,
    Blueprint,
    EnvGroup,
    EnvVar,
    Owner,
    Service,
    State,
    new_id,
)
from render_rotator.sandbox.emulator.wsgi import WSGIApp, make_app, serve

log = logging.getLogger("render_rotator.sandbox.emulator")

#: The base URL for clients driving `RenderEmulator.app` in-process (the host is never looked
#: up: ``httpx.WSGITransport`` hands requests straight to the app).
IN_PROCESS_URL = "http://render-emulator.invalid/v1"


class RenderEmulator:
    """A Render API backed by real PostgreSQL clusters.

    ``with RenderEmulator(cluster, provision_delay=0.2) as emu: emu.base_url, emu.api_key``
    serves it on ``http://127.0.0.1:PORT/v1``; without `start`, ``emu.app`` is the same API as
    a WSGI application (``httpx.WSGITransport(app=emu.app)``). `cluster` (TLS, as `Cluster`
    makes by default) serves its own major; databases of other majors get a cluster the
    emulator starts on first use and stops with itself. Stopping it drops every database and
    role it created. `clock` is the wall clock by default; a `ManualClock` moves only when a
    test advances it.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        api_key: str | None = None,
        port: int = 0,
        provision_delay: float = 1.0,
        deploy_delay: float = 0.5,
        host: str = "127.0.0.1",
        internal_reachable: bool = True,
        enforce_rate_limits: bool = False,
        default_owner: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if not cluster.tls:
            raise ValueError(
                "the emulator needs a cluster with TLS, as Render's external URLs require it: "
                "use Cluster() (tls=True is the default), not Cluster(tls=False)"
            )
        self.cluster = cluster
        self.clock: Clock = clock or SystemClock()
        self.provisioner = Provisioner(cluster)
        self.api_key = api_key or "rnd_" + secrets.token_urlsafe(24)
        self.host = host
        self.provision_delay = float(provision_delay)
        self.deploy_delay = float(deploy_delay)
        self.internal_reachable = internal_reachable
        self.enforce_rate_limits = enforce_rate_limits
        self.faults = Faults()
        self.state = State()
        self.requests: list[tuple[str, str, int]] = []
        self.app: WSGIApp = make_app(self)
        self._requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._limiter = RateLimiter()
        self._router = Router(api_routes(self))
        self.default_owner_id: str | None = None
        if default_owner:
            self.default_owner_id = self.add_owner()

    def __repr__(self) -> str:
        return f"RenderEmulator(base_url={self.base_url!r})" if self._server else "RenderEmulator()"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://host:port`` without the API version."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What RENDER_API_URL should be: ``http://127.0.0.1:PORT/v1``."""
        return self.root_url + API_PREFIX

    @property
    def control_url(self) -> str:
        """The fault-injection endpoint: ``<base_url>/_sandbox/faults``."""
        return self.base_url + CONTROL_PREFIX + "/faults"

    def start(self) -> RenderEmulator:
        """Serve `app` on a real socket in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._server, self._thread = serve(self.app, self.host, self._requested_port)
        log.info("Render emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and drop every database and role this emulator created."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.state.lock:
            leftovers = list(self.state.postgres.values())
            self.state.postgres.clear()
        for pg in leftovers:
            with contextlib.suppress(Exception):
                self.provisioner.drop(pg)
        self.provisioner.stop()

    def __enter__(self) -> RenderEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- Python API: set-up helpers ------------------------------------------------------------

    def add_owner(
        self,
        name: str = "Sandbox Workspace",
        email: str = "sandbox@example.com",
        type: str = "team",  # noqa: A002 - Render's field name
        *,
        owner_id: str | None = None,
    ) -> str:
        """Add a workspace (Render "owner"); returns its ``tea-...`` id."""
        if type not in ("user", "team"):
            raise ValueError("owner type must be 'user' or 'team'")
        owner = Owner(owner_id or new_id("tea"), self.state.next_seq(), name, email, type)
        with self.state.lock:
            self.state.owners[owner.id] = owner
        return owner.id

    def _owner_or_default(self, owner_id: str | None) -> str:
        owner_id = owner_id or self.default_owner_id
        with self.state.lock:
            if owner_id is None or owner_id not in self.state.owners:
                raise ValueError(f"unknown owner {owner_id!r}; add_owner() first")
        return owner_id

    def add_service(
        self,
        name: str = "web-app",
        owner_id: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        *,
        repo: str | None = None,
        branch: str = "main",
        image_path: str = DEFAULT_IMAGE,
        region: str = "oregon",
        plan: str = "free",
        suspended: bool = False,
        type: str = "web_service",  # noqa: A002 - Render's field name
        initial_deploy: str = "live",
    ) -> str:
        """Add a service record (no app runs) with one first deploy; returns ``srv-...``.

        `type` is Render's service type (a web service by default). Image-backed like the
        recorded service unless `repo` is given (then Git-backed, and deploys carry a commit
        and go through ``build_in_progress``). `initial_deploy` is the first deploy's outcome:
        ``"build_failed"`` gives a service with no successful build.
        """
        if type not in SERVICE_TYPES:
            raise ValueError(f"service type must be one of {', '.join(SERVICE_TYPES)}")
        if initial_deploy != "live" and initial_deploy not in DEPLOY_FAILURE_STATUSES:
            raise ValueError(f"unknown deploy outcome {initial_deploy!r}")
        owner = self._owner_or_default(owner_id)
        now = self.clock.time()
        svc = Service(
            id=new_id("srv"),
            seq=self.state.next_seq(),
            name=name,
            owner_id=owner,
            created=now - 120,
            updated=now - 120,
            region=region,
            plan=plan,
            repo=repo,
            branch=branch if repo else None,
            image_path=None if repo else image_path,
            suspended=suspended,
            type=type,
        )
        for key, value in (env_vars or {}).items():
            svc.env_vars[key] = EnvVar(key, value, self.state.next_seq())
        first = deploys.new_deploy(
            self.state.next_seq(), svc, now - 90, 30.0, initial_deploy, "deployed_by_render", None
        )
        svc.deploys.append(first)
        with self.state.lock:
            self.state.services[svc.id] = svc
        return svc.id

    def add_env_group(
        self,
        name: str = "app-env",
        owner_id: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        service_ids: Iterable[str] = (),
    ) -> str:
        """Add an environment group, linked to `service_ids`; returns ``evg-...``.

        Like Render, the group lists its variables newest first: the last one given comes first.
        """
        owner = self._owner_or_default(owner_id)
        now = self.clock.time()
        group = EnvGroup(new_id("evg"), self.state.next_seq(), name, owner, now, now)
        for key, value in (env_vars or {}).items():
            group.env_vars.insert(0, EnvVar(key, value, self.state.next_seq()))
        with self.state.lock:
            for sid in service_ids:
                if sid not in self.state.services:
                    raise ValueError(f"unknown service {sid!r}")
                group.service_ids.append(sid)
            self.state.env_groups[group.id] = group
        return group.id

    def add_blueprint(
        self,
        name: str = "app-blueprint",
        owner_id: str | None = None,
        manages: Iterable[str] = (),
        *,
        repo: str = "https://github.com/example/app",
        branch: str = "main",
        path: str = "render.yaml",
        auto_sync: bool = True,
    ) -> str:
        """Add a Blueprint managing `manages` (postgres, service or env group ids); returns
        its ``exs-...`` id. Nothing syncs: it only answers the Blueprint endpoints."""
        owner = self._owner_or_default(owner_id)
        blueprint = Blueprint(
            new_id("exs"), self.state.next_seq(), name, owner, repo, branch, path, auto_sync,
            self.clock.time(),
        )  # fmt: skip
        with self.state.lock:
            self.state.blueprints[blueprint.id] = blueprint
        for resource_id in manages:
            self.manage_with_blueprint(blueprint.id, resource_id)
        return blueprint.id

    def manage_with_blueprint(self, blueprint_id: str, resource_id: str) -> None:
        """Mark a database, service or env group as managed by this Blueprint."""
        with self.state.lock:
            blueprint = self.state.blueprints[blueprint_id]
            if resource(self, resource_id) is None:
                raise ValueError(f"unknown resource {resource_id!r}")
            if resource_id not in blueprint.resource_ids:
                blueprint.resource_ids.append(resource_id)

    def create_postgres(self, **fields: Any) -> dict[str, Any]:
        """Provision a database exactly as ``POST /postgres`` does (camelCase fields);
        returns the JSON Render would answer. Raises EmulatorAPIError on refusal."""
        body = dict(fields)
        if "ownerId" not in body and self.default_owner_id:
            body["ownerId"] = self.default_owner_id
        pg = postgres.create_postgres(self, body)
        with self.state.lock:
            return postgres.postgres_json(self, pg, self.now())

    def wait_for_postgres(
        self, postgres_id: str, status: str = "available", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll until the database has `status` (the emulator's clock: a `ManualClock` moves
        forward instead of waiting); TimeoutError after `timeout` seconds of it."""
        deadline = self.clock.time() + timeout
        delay = 0.02
        while True:
            current = self.postgres(postgres_id)
            if current["status"] == status:
                return current
            if self.clock.time() >= deadline:
                raise TimeoutError(f"{postgres_id} still {current['status']!r} after {timeout:g}s")
            self.clock.sleep(delay)
            delay = min(delay * 2, 0.25)

    def delete_postgres(self, postgres_id: str) -> None:
        """Delete a database as ``DELETE /postgres/{id}`` does."""
        postgres.delete_postgres(self, postgres_id)

    def set_expires_at(self, postgres_id: str, when: datetime | None) -> None:
        """Move a database's ``expiresAt`` (e.g. to test "expiring within N days"); a time
        already past expires a free database at once. None: Render gave no expiresAt (a free
        database then expires 30 days after its createdAt)."""
        with self.state.lock:
            pg = postgres.get_pg(self, postgres_id)
            pg.expires_at = when.timestamp() if when is not None else None
        postgres.expire(self)

    def set_created_at(self, postgres_id: str, when: datetime) -> None:
        """Move a database's ``createdAt`` (its expiry, without expiresAt, counts from it)."""
        with self.state.lock:
            postgres.get_pg(self, postgres_id).created = when.timestamp()
        postgres.expire(self)

    # -- the clock -----------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock (epoch seconds)."""
        return self.clock.time()

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward; expiries and deletions that fall due happen."""
        self.clock.advance(seconds)
        postgres.expire(self)

    def resolve_internal_url(self, url: str) -> str:
        """A URL that really connects for an internal connection string of this emulator.

        ``postgresql://u:p@dpg-xxx-a/db`` (Render's form, ``internal_reachable=False``) becomes
        the database's Unix-socket URL (``...@localhost:<port>/db?host=<dir>``, the sandbox's
        private network); any other URL is returned unchanged.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        with self.state.lock:
            pg = self.state.postgres.get(host)
        if not (pg or re.fullmatch(r"dpg-[a-z0-9]+-[a-z]", host)):
            return url
        cluster = self.provisioner.cluster_of(pg) if pg else self.cluster
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"localhost:{cluster.port}"
        query = "&".join(
            q for q in (parts.query, "host=" + quote(str(cluster.socket_dir), safe="")) if q
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def servable_versions(self) -> list[str]:
        """The majors this emulator can provision: running clusters and installed servers."""
        return self.provisioner.servable_versions()

    # -- Python API: read helpers for tests ----------------------------------------------------

    def postgres_ids(self) -> list[str]:
        with self.state.lock:
            return [pg.id for pg in sorted(self.state.postgres.values(), key=lambda p: p.seq)]

    def postgres(self, postgres_id: str) -> dict[str, Any]:
        """The database's JSON as ``GET /postgres/{id}`` answers it (KeyError if unknown)."""
        postgres.expire(self)
        with self.state.lock:
            pg = self.state.postgres.get(postgres_id)
            if pg is None:
                raise KeyError(postgres_id)
            return postgres.postgres_json(self, pg, self.now())

    def connection_info(self, postgres_id: str) -> dict[str, str]:
        with self.state.lock:
            pg = self.state.postgres.get(postgres_id)
            if pg is None:
                raise KeyError(postgres_id)
            return postgres.connection_info_json(self, pg)

    def service(self, service_id: str) -> dict[str, Any]:
        with self.state.lock:
            return service_json(self.state.services[service_id])

    def env_vars(self, service_id: str) -> dict[str, str]:
        """A service's env vars as a plain dict."""
        with self.state.lock:
            return {k: v.value for k, v in self.state.services[service_id].env_vars.items()}

    def env_group_vars(self, group_id: str) -> dict[str, str]:
        with self.state.lock:
            return {v.key: v.value for v in self.state.env_groups[group_id].env_vars}

    def deploy_requests(self, service_id: str) -> list[dict[str, Any]]:
        """Every ``POST .../deploys`` body this service received, oldest first (refused ones
        too; an empty body is ``{}``)."""
        with self.state.lock:
            return [dict(body) for body in self.state.services[service_id].deploy_requests]

    def deploys(self, service_id: str) -> list[dict[str, Any]]:
        """A service's deploys, newest first, as ``GET .../deploys/{id}`` answers them."""
        now = self.now()
        with self.state.lock:
            svc = self.state.services[service_id]
            return [deploys.deploy_json(svc, d, now) for d in reversed(svc.deploys)]

    def state_snapshot(self) -> dict[str, Any]:
        """Everything, as plain data: owners, databases, services, env groups (no passwords
        except inside env var values, which hold connection strings by design)."""
        postgres.expire(self)
        now = self.now()
        with self.state.lock:
            return {
                "owners": [o.json() for o in self.state.owners.values()],
                "postgres": {
                    pg.id: postgres.postgres_json(self, pg, now)
                    for pg in sorted(self.state.postgres.values(), key=lambda p: p.seq)
                },
                "services": {
                    s.id: {
                        "name": s.name,
                        "type": s.type,
                        "suspended": "suspended" if s.suspended else "not_suspended",
                        "maintenanceMode": dict(s.maintenance),
                        "envVars": {k: v.value for k, v in s.env_vars.items()},
                        "deploys": [
                            {k: dj[k] for k in ("id", "status", "trigger")}
                            for dj in (deploys.deploy_json(s, d, now) for d in reversed(s.deploys))
                        ],
                    }
                    for s in self.state.services.values()
                },
                "envGroups": {
                    g.id: {
                        "name": g.name,
                        "envVars": {v.key: v.value for v in g.env_vars},
                        "serviceIds": list(g.service_ids),
                    }
                    for g in self.state.env_groups.values()
                },
            }

    def clear_requests(self) -> None:
        with self.state.lock:
            self.requests.clear()

    # -- the request pipeline ------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, query: str, headers: Mapping[str, str], body: bytes,
        client: str,
    ) -> Reply:  # fmt: skip
        """One HTTP request, whichever server carried it: control endpoint, auth, hooks,
        latency, rate limits and faults, then the resource's handler."""
        path = raw_path[len(API_PREFIX) :] if raw_path.startswith(API_PREFIX + "/") else None
        if raw_path == API_PREFIX:
            path = ""
        if raw_path.startswith(CONTROL_PREFIX):
            path = raw_path
        lower = {k.lower(): v for k, v in headers.items()}
        if path is None:
            return self._finish(method, raw_path, error_reply(not_found(raw_path)), None)
        req = Request(
            method=method,
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers=lower,
            body=body,
            client=client,
        )
        if path.startswith(CONTROL_PREFIX):
            return control.handle(self, req)
        if not self.authorized(lower.get("authorization", "")):
            return self._finish(
                method, path, Reply(401, {"id": str(uuid.uuid4()), "message": "unauthorized"}),
                None,
            )  # fmt: skip
        for hook in self.faults.take_hooks(method, path):
            hook(method, path)
        delay = self.faults.latency_for(method, path)
        if delay:
            self.clock.sleep(delay)
        bucket = self._limiter.bucket(method, path)
        limits = self._limiter.hit(bucket, self.clock.time())
        rule = self.faults.take_rule(method, path) or self.faults.take_flaky(method, path)
        if rule is not None and not rule.after_processing:
            return self._finish(method, path, fault_reply(rule), limits)
        if self.enforce_rate_limits and limits[3]:
            reply = Reply(429, {"id": str(uuid.uuid4()), "message": "rate limit exceeded"})
            reply.headers.append(("Retry-After", str(limits[2])))
            return self._finish(method, path, reply, limits)
        try:
            postgres.expire(self)
            reply = self._router.dispatch(req)
        except EmulatorAPIError as err:
            reply = error_reply(err)
        except Exception:
            log.exception("emulator failed on %s %s", method, path)
            reply = Reply(500, {"id": str(uuid.uuid4()), "message": "internal server error"})
        if rule is not None:
            reply = fault_reply(rule)
        return self._finish(method, path, reply, limits)

    def refuse(self, method: str, path: str, status: int, message: str) -> Reply:
        """An error answer decided before the pipeline (a body the server cannot read),
        logged and with Render's headers like any other."""
        reply = Reply(status, {"id": str(uuid.uuid4()), "message": message})
        return self._finish(method, path, reply, None)

    def authorized(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries this emulator's key."""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return secrets.compare_digest(token.strip().encode(), self.api_key.encode())

    def _finish(
        self,
        method: str,
        path: str,
        reply: Reply,
        limits: tuple[int, int, int, bool] | None,
    ) -> Reply:
        """Log the request; add Render's rate-limit, request-id and security headers."""
        with self.state.lock:
            self.requests.append((method, path, reply.status))
        if reply.drop:
            return reply
        if limits is None:
            limits = (RATE_BUCKETS["read"], RATE_BUCKETS["read"], int(RATE_WINDOW), False)
        limit, remaining, reset, _over = limits
        if reply.status == 429:
            remaining = 0
            retry = dict(reply.headers).get("Retry-After")
            if retry is not None:
                reset = math.ceil(float(retry))
        headers = [
            ("Ratelimit-Limit", str(limit)),
            ("Ratelimit-Remaining", str(remaining)),
            ("Ratelimit-Reset", str(reset)),
            ("Render-Request-Id", request_id(self.state.next_seq())),
            *SECURITY_HEADERS,
        ]
        reply.headers = headers + reply.headers
        return reply
