"""A small, typed client for the parts of Render's REST API that rotation uses.

Design, in brief:

* One method per Render call, returning the typed models of :mod:`.models`, raising only the
  :class:`~render_rotator.errors.RenderAPIError` tree.
* Retries (tenacity) on 429, 500/502/503/504 and transport errors, with exponential backoff and
  jitter, honouring ``Retry-After`` and (on 429) ``Ratelimit-Reset``; the whole retry budget of
  one call is ``max_retry_time`` seconds. Whether a request may be repeated depends on what a
  repeat could do:

  - GET/PUT/PATCH/DELETE and suspend/resume POSTs are idempotent: retried freely.
  - ``create_postgres`` must never create a second database. 429s and failures before the
    request left are retried as is; after an ambiguous failure (5xx, a timeout or a dropped
    connection once the request may have been sent) it first looks for a database with that
    name and owner and returns it if Render did create it.
  - ``trigger_deploy`` is retried only when Render certainly did not act (429, or a connection
    that was never opened); otherwise the error surfaces.

* Waiting (``wait_for_postgres``, ``wait_for_deploy``) polls with a growing interval through the
  injectable ``clock``/``sleep``, so tests never really sleep.
* The API key lives only in the ``Authorization`` header: it is never logged, never part of an
  error message or a ``repr`` (any echo of it by Render is scrubbed too).
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from render_rotator import secrets
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

from .models import (
    DEPLOY_MODES,
    DEPLOY_TERMINAL,
    POSTGRES_FAILED,
    POSTGRES_TERMINAL,
    Blueprint,
    ConnectionInfo,
    Deploy,
    DeployStatus,
    EnvGroup,
    EnvVar,
    IPAllowEntry,
    Owner,
    Postgres,
    PostgresStatus,
    Service,
)

__all__ = ["DEFAULT_BASE_URL", "RenderClient", "is_free_tier_refusal"]

logger = logging.getLogger("render_rotator.render")

DEFAULT_BASE_URL = "https://api.render.com/v1"
PAGE_LIMIT = 100  # Render's maximum page size
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_ATTEMPTS = 50  # a guard only; max_retry_time is the real bound

T = TypeVar("T")
M = TypeVar("M")

# Transport errors raised before a single byte of the request left: repeating is always safe.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Nothing listens at the address (or the name does not exist): a wrong RENDER_API_URL, not a
# passing hiccup, so it gets only this many seconds of retries, not max_retry_time.
UNREACHABLE_RETRY_TIME = 5.0


def _unreachable(exc: BaseException) -> str | None:
    """'connection refused' or 'unknown host' when `exc` says nothing is there to answer."""
    if not isinstance(exc, httpx.ConnectError):
        return None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused: nothing listens there"
        if isinstance(seen, socket.gaierror) and seen.errno in (
            socket.EAI_NONAME,
            getattr(socket, "EAI_NODATA", socket.EAI_NONAME),
        ):
            return "unknown host"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    if "connection refused" in text:
        return "connection refused: nothing listens there"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return None


# Transport errors worth another try for requests that may be repeated.
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

# Render's refusal of a second free database has no documented shape (it is in neither the
# OpenAPI spec nor the recordings), so recognise it by its words on any refusing status.
_FREE_WORDS = re.compile(r"\bfree\b", re.IGNORECASE)
_LIMIT_WORDS = re.compile(
    r"\b(limit|limited|only one|one free|more than one|already|maximum|max|exceed\w*|"
    r"allowed|quota|at most)\b",
    re.IGNORECASE,
)
_REFUSAL_STATUSES = frozenset({400, 402, 403, 409, 422})

# snake_case names whose camelCase is not the mechanical conversion.
_SPECIAL_CAMEL = {"disk_size_gb": "diskSizeGB", "datadog_api_key": "datadogAPIKey"}
_CREATE_REQUIRED = ("name", "ownerId", "plan", "version")


def is_free_tier_refusal(error: BaseException) -> bool:
    """True when Render refused because the workspace may hold only one free database.

    Rotation's ``auto`` strategy uses this to fall back from create-first to delete-first.
    """
    if not isinstance(error, RenderAPIError):
        return False
    if error.status_code is not None and error.status_code not in _REFUSAL_STATUSES:
        return False
    return _looks_like_free_tier_limit(error.message)


def _looks_like_free_tier_limit(message: str) -> bool:
    return bool(_FREE_WORDS.search(message) and _LIMIT_WORDS.search(message))


class _Policy(enum.Enum):
    """How freely a request may be repeated after a failure."""

    IDEMPOTENT = "idempotent"  # GET, PUT, PATCH, DELETE, suspend/resume
    CREATE = "create"  # POST that creates: look for the result before repeating
    NOT_IDEMPOTENT = "not-idempotent"  # POST deploys: repeat only when Render did not act


class _RetryableStatus(Exception):
    """An answer worth retrying (429/5xx); carries the response and Render's wait hint."""

    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = retry_after


@dataclass
class _AttemptState:
    """What the attempts of one call have learnt so far."""

    ambiguous: bool = False  # an earlier attempt may have been processed by Render


def _camel(name: str) -> str:
    if name in _SPECIAL_CAMEL:
        return _SPECIAL_CAMEL[name]
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _api_value(value: Any) -> Any:
    """Turn model objects inside a request body into Render's JSON shapes."""
    if isinstance(value, IPAllowEntry):
        return value.to_api()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_api_value(item) for item in value]
    return value


def _body_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Accept snake_case or Render's camelCase keys; send camelCase."""
    body: dict[str, Any] = {}
    for name, value in fields.items():
        body[_camel(name) if "_" in name else name] = _api_value(value)
    if "version" in body and body["version"] is not None:
        body["version"] = str(body["version"])
    return body


def _seg(value: str) -> str:
    """Quote one path segment (ids, env var keys)."""
    if not value:
        raise UsageError("empty id or key in a Render API path")
    return quote(str(value), safe="")


def _parse_retry_after(value: str, date_header: str | None) -> float | None:
    """``Retry-After`` is delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = datetime.now(UTC)
    if date_header:  # measure against Render's clock, not ours, when it says what it is
        with contextlib.suppress(TypeError, ValueError):
            now = email.utils.parsedate_to_datetime(date_header)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _retry_hint(response: httpx.Response) -> float | None:
    """Seconds Render asks us to wait, if it said: Retry-After, else Ratelimit-Reset on 429."""
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        parsed = _parse_retry_after(retry_after, response.headers.get("Date"))
        if parsed is not None:
            return parsed
    reset = response.headers.get("Ratelimit-Reset")
    if response.status_code == 429 and reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


def _render_message(response: httpx.Response) -> str:
    """Render's own words from an error body ``{"id": ..., "message": ...}``."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        message = data.get("message") or data.get("error")
        if message:
            return str(message)
    return response.reason_phrase or f"HTTP {response.status_code}"


def _request_id(response: httpx.Response) -> str | None:
    """Render's ``Render-Request-Id``: the one thing Render's support needs to find a call.

    Kept to printable characters and a sane length, as it comes from the network.
    """
    raw = response.headers.get("render-request-id", "").strip()
    cleaned = "".join(ch for ch in raw if ch.isprintable() and not ch.isspace())[:128]
    return cleaned or None


class RenderClient:
    """Render REST API client: one method per call, typed results, typed errors.

    ``api_key`` and ``base_url`` fall back to ``RENDER_API_KEY`` and ``RENDER_API_URL``.
    ``sleep`` and ``clock`` are injectable so retries and waits can be tested instantly;
    ``transport`` lets tests or the sandbox plug in an httpx transport.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        *,
        max_retry_time: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = (api_key if api_key is not None else os.environ.get("RENDER_API_KEY", "")).strip()
        if not key:
            raise MissingAPIKeyError(
                "No Render API key: set RENDER_API_KEY to a key from Render's Account "
                "Settings > API Keys."
            )
        bad = next((c for c in key if not (" " < c < "\x7f")), None)
        if bad is not None:
            # never echo the key: say only what is wrong with it
            raise MissingAPIKeyError(
                f"the Render API key contains a character no API key has (code {ord(bad)}, "
                f"at position {key.index(bad) + 1} of {len(key)})",
                hint="copy the key again from Render's Account Settings > API Keys, without "
                "spaces, line breaks or quotes",
            )
        secrets.register(key)
        url = base_url or os.environ.get("RENDER_API_URL", "").strip() or DEFAULT_BASE_URL
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self.max_retry_time = max_retry_time
        self._api_key = key
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/json",
                "User-Agent": "render-rotator",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def __enter__(self) -> RenderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RenderClient(base_url={self.base_url!r})"

    # -- owners ------------------------------------------------------------------------------

    def list_owners(self) -> list[Owner]:
        """Workspaces the API key can act for."""
        return [Owner.from_api(item) for item in self._paginate("/owners", "owner")]

    # -- postgres ----------------------------------------------------------------------------

    def list_postgres(self, name: str | None = None, owner_id: str | None = None) -> list[Postgres]:
        """All databases, optionally filtered by Render on name and owner (workspace) id."""
        params: dict[str, str] = {}
        if name is not None:
            params["name"] = name
        if owner_id is not None:
            params["ownerId"] = owner_id
        return [Postgres.from_api(item) for item in self._paginate("/postgres", "postgres", params)]

    def get_postgres(self, postgres_id: str) -> Postgres:
        return self._call("GET", f"/postgres/{_seg(postgres_id)}", _json_model(Postgres.from_api))

    def create_postgres(self, **fields: Any) -> Postgres:
        """Create a database (body keys as Render's camelCase, or snake_case).

        Never creates a duplicate: after an ambiguous failure it looks for the database by name
        and owner before sending the request again.
        """
        body = _body_fields(fields)
        missing = [key for key in _CREATE_REQUIRED if not body.get(key)]
        if missing:
            raise UsageError(f"create_postgres needs {', '.join(missing)}")
        name, owner_id = str(body["name"]), str(body["ownerId"])
        known_before = {pg.id for pg in self.list_postgres(name=name, owner_id=owner_id)}

        def find_created() -> Postgres | None:
            for pg in self.list_postgres(name=name, owner_id=owner_id):
                if pg.name == name and pg.owner_id == owner_id and pg.id not in known_before:
                    logger.warning(
                        "Render created database %s (%s) although the request failed; "
                        "using it instead of creating another",
                        pg.id,
                        name,
                    )
                    return pg
            return None

        return self._call(
            "POST",
            "/postgres",
            _json_model(Postgres.from_api),
            body=body,
            policy=_Policy.CREATE,
            recover=find_created,
        )

    def update_postgres(self, postgres_id: str, **fields: Any) -> Postgres:
        """PATCH a database (name, plan, ipAllowList, ...)."""
        return self._call(
            "PATCH",
            f"/postgres/{_seg(postgres_id)}",
            _json_model(Postgres.from_api),
            body=_body_fields(fields),
        )

    def delete_postgres(self, postgres_id: str) -> None:
        """Delete a database (204). Irreversible: callers must have a verified backup."""
        self._call("DELETE", f"/postgres/{_seg(postgres_id)}", _ignore_body)

    def get_connection_info(self, postgres_id: str) -> ConnectionInfo:
        return self._call(
            "GET",
            f"/postgres/{_seg(postgres_id)}/connection-info",
            _json_model(ConnectionInfo.from_api),
        )

    def suspend_postgres(self, postgres_id: str) -> None:
        self._call("POST", f"/postgres/{_seg(postgres_id)}/suspend", _ignore_body)

    def resume_postgres(self, postgres_id: str) -> None:
        self._call("POST", f"/postgres/{_seg(postgres_id)}/resume", _ignore_body)

    def wait_for_postgres(
        self,
        postgres_id: str,
        status: str | PostgresStatus = "available",
        timeout: float = 600.0,
        *,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        on_poll: Callable[[Postgres], None] | None = None,
    ) -> Postgres:
        """Poll until the database has ``status``; return it.

        Raises APITimeoutError (naming the id and last status) past ``timeout`` and
        RenderAPIError when the database settles in another terminal status. The status seen
        at the first poll is tolerated while it lasts, because right after suspend/resume Render
        may still report the old state.
        """
        if str(status) not in {member.value for member in PostgresStatus}:
            raise UsageError(f"wait_for_postgres: unknown status {status!r}")
        target = PostgresStatus(str(status))
        first: list[PostgresStatus] = []

        def done(pg: Postgres) -> bool:
            if on_poll is not None:
                on_poll(pg)
            if pg.status == target:
                return True
            if not first:
                first.append(pg.status)
            failed = pg.status in POSTGRES_FAILED
            settled_elsewhere = pg.status in POSTGRES_TERMINAL and pg.status != first[0]
            if failed or settled_elsewhere:
                raise RenderAPIError(
                    f"database {postgres_id} is {pg.status_raw}, not {target.value}",
                    path=f"/postgres/{postgres_id}",
                    method="GET",
                )
            return False

        return self._poll(
            lambda: self.get_postgres(postgres_id),
            done,
            lambda pg: (
                f"database {postgres_id} did not become {target.value} within "
                f"{timeout:g}s (last status: {pg.status_raw if pg else 'none'})"
            ),
            timeout,
            poll_interval,
            max_poll_interval,
        )

    # -- services ----------------------------------------------------------------------------

    def get_service(self, service_id: str) -> Service:
        return self._call("GET", f"/services/{_seg(service_id)}", _json_model(Service.from_api))

    def list_services(self, name: str | None = None, owner_id: str | None = None) -> list[Service]:
        params: dict[str, str] = {}
        if name is not None:
            params["name"] = name
        if owner_id is not None:
            params["ownerId"] = owner_id
        return [Service.from_api(item) for item in self._paginate("/services", "service", params)]

    def suspend_service(self, service_id: str) -> None:
        """Stop a service (202) so nothing writes to the database during the copy."""
        self._call("POST", f"/services/{_seg(service_id)}/suspend", _ignore_body)

    def resume_service(self, service_id: str) -> None:
        self._call("POST", f"/services/{_seg(service_id)}/resume", _ignore_body)

    def set_maintenance_mode(
        self, service_id: str, enabled: bool, uri: str | None = None
    ) -> Service:
        """Turn maintenance mode on or off (web services only).

        Render's schema requires ``uri`` beside ``enabled``; when not given, the service's
        current maintenance page is kept, so this does not reset a custom page.
        """
        if uri is None:
            uri = self.get_service(service_id).maintenance_mode_uri
        body = {"serviceDetails": {"maintenanceMode": {"enabled": bool(enabled), "uri": uri}}}
        return self._call(
            "PATCH", f"/services/{_seg(service_id)}", _json_model(Service.from_api), body=body
        )

    # -- service env vars --------------------------------------------------------------------

    def list_env_vars(self, service_id: str) -> list[EnvVar]:
        path = f"/services/{_seg(service_id)}/env-vars"
        return [EnvVar.from_api(item) for item in self._paginate(path, "envVar")]

    def get_env_var(self, service_id: str, key: str) -> EnvVar:
        """One env var; NotFoundError when the service does not set it."""
        return self._call(
            "GET",
            f"/services/{_seg(service_id)}/env-vars/{_seg(key)}",
            _json_model(EnvVar.from_api),
        )

    def set_env_var(self, service_id: str, key: str, value: str) -> EnvVar:
        """Add or update ONE env var; the service's other variables are left untouched."""
        return self._call(
            "PUT",
            f"/services/{_seg(service_id)}/env-vars/{_seg(key)}",
            _json_model(EnvVar.from_api),
            body={"value": value},
        )

    def delete_env_var(self, service_id: str, key: str) -> None:
        self._call("DELETE", f"/services/{_seg(service_id)}/env-vars/{_seg(key)}", _ignore_body)

    # -- env groups --------------------------------------------------------------------------

    def get_env_group(self, group_id: str) -> EnvGroup:
        return self._call("GET", f"/env-groups/{_seg(group_id)}", _json_model(EnvGroup.from_api))

    def set_env_group_var(self, group_id: str, key: str, value: str) -> EnvGroup:
        """Add or update ONE variable of an env group; Render answers with the whole group."""
        answer = self._call(
            "PUT",
            f"/env-groups/{_seg(group_id)}/env-vars/{_seg(key)}",
            _json_body,
            body={"value": value},
        )
        if isinstance(answer, Mapping) and "envVars" in answer and "id" in answer:
            return self._parse(EnvGroup.from_api, answer, "PUT", f"/env-groups/{group_id}")
        return self.get_env_group(group_id)

    def delete_env_group_var(self, group_id: str, key: str) -> None:
        self._call("DELETE", f"/env-groups/{_seg(group_id)}/env-vars/{_seg(key)}", _ignore_body)

    # -- blueprints --------------------------------------------------------------------------

    def list_blueprints(self, owner_id: str | None = None) -> list[Blueprint]:
        """Blueprints the key can see (optionally one workspace's), without their resources."""
        params = {"ownerId": owner_id} if owner_id is not None else None
        return [
            Blueprint.from_api(item) for item in self._paginate("/blueprints", "blueprint", params)
        ]

    def get_blueprint(self, blueprint_id: str) -> Blueprint:
        """One Blueprint with ``resources``: the services, databases and env groups it manages."""
        return self._call(
            "GET", f"/blueprints/{_seg(blueprint_id)}", _json_model(Blueprint.from_api)
        )

    # -- deploys -----------------------------------------------------------------------------

    def trigger_deploy(
        self, service_id: str, clear_cache: bool = False, *, deploy_mode: str | None = None
    ) -> Deploy | None:
        """Start a deploy. Render answers 201 with the deploy, or 202 (queued) with no body.

        ``deploy_mode="deploy_only"`` redeploys the last successful build with the current env
        vars (no new code, no build); without it Render builds the branch's latest commit.
        Render refuses ``deploy_only`` beside ``clearCache`` (a build option), so that is a
        UsageError here before anything is sent.

        On 202 the queued deploy is looked up among the newest deploys; None only when it
        cannot be identified.
        """
        if deploy_mode is not None and deploy_mode not in DEPLOY_MODES:
            raise UsageError(
                f"deploy_mode must be one of {', '.join(DEPLOY_MODES)}, got {deploy_mode!r}"
            )
        if deploy_mode == "deploy_only" and clear_cache:
            raise UsageError(
                "deploy_mode='deploy_only' cannot be combined with clear_cache: it deploys "
                "the last build without building"
            )
        body: dict[str, Any] = {"clearCache": "clear"} if clear_cache else {}
        if deploy_mode is not None:
            body["deployMode"] = deploy_mode
        answer = self._call(
            "POST",
            f"/services/{_seg(service_id)}/deploys",
            _json_body,
            body=body,
            policy=_Policy.NOT_IDEMPOTENT,
        )
        if isinstance(answer, Mapping) and answer.get("id"):
            return self._parse(Deploy.from_api, answer, "POST", f"/services/{service_id}/deploys")
        return self._find_queued_deploy(service_id)

    def _find_queued_deploy(self, service_id: str) -> Deploy | None:
        """The deploy a 202 just queued: the newest queued one, else the newest unfinished
        API-triggered one."""
        recent = self.list_deploys(service_id, limit=5)
        for deploy in recent:
            if deploy.status == DeployStatus.QUEUED:
                return deploy
        for deploy in recent:
            if deploy.status not in DEPLOY_TERMINAL and deploy.trigger in (None, "api"):
                return deploy
        logger.info("deploy of %s was queued but could not be identified", service_id)
        return None

    def list_deploys(
        self, service_id: str, limit: int = 20, *, statuses: Iterable[str] | None = None
    ) -> list[Deploy]:
        """The ``limit`` newest deploys of a service, newest first (only those in
        ``statuses`` when given: Render filters on its side)."""
        if limit < 1:
            raise UsageError("list_deploys limit must be at least 1")
        path = f"/services/{_seg(service_id)}/deploys"
        params = {"status": [str(s) for s in statuses]} if statuses is not None else None
        items = self._paginate(path, "deploy", params, max_items=limit)
        return [Deploy.from_api(item) for item in items]

    def get_deploy(self, service_id: str, deploy_id: str) -> Deploy:
        return self._call(
            "GET",
            f"/services/{_seg(service_id)}/deploys/{_seg(deploy_id)}",
            _json_model(Deploy.from_api),
        )

    def wait_for_deploy(
        self,
        service_id: str,
        deploy_id: str,
        timeout: float = 600.0,
        *,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        on_poll: Callable[[Deploy], None] | None = None,
    ) -> Deploy:
        """Poll until the deploy reaches a terminal status and return it.

        The caller decides what success is (``deploy.status in DEPLOY_SUCCESSFUL``);
        APITimeoutError past ``timeout``.
        """

        def done(deploy: Deploy) -> bool:
            if on_poll is not None:
                on_poll(deploy)
            return deploy.status in DEPLOY_TERMINAL

        return self._poll(
            lambda: self.get_deploy(service_id, deploy_id),
            done,
            lambda d: (
                f"deploy {deploy_id} of {service_id} did not finish within {timeout:g}s "
                f"(last status: {d.status_raw if d else 'none'})"
            ),
            timeout,
            poll_interval,
            max_poll_interval,
        )

    # -- machinery ---------------------------------------------------------------------------

    def _poll(
        self,
        fetch: Callable[[], T],
        done: Callable[[T], bool],
        describe_timeout: Callable[[T | None], str],
        timeout: float,
        interval: float,
        max_interval: float,
    ) -> T:
        """Fetch until ``done``; the interval doubles up to ``max_interval``."""
        deadline = self._clock() + timeout
        delay = max(interval, 0.0)
        last: T | None = None
        while True:
            last = fetch()
            if done(last):
                return last
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise APITimeoutError(describe_timeout(last))
            self._sleep(min(delay, remaining))
            delay = min(max(delay * 2, 0.1), max_interval)

    def _paginate(
        self,
        path: str,
        item_key: str,
        params: Mapping[str, str | list[str]] | None = None,
        *,
        max_items: int | None = None,
    ) -> list[Mapping[str, Any]]:
        """Follow Render's cursors: pages are ``[{"cursor": ..., item_key: {...}}]``."""
        items: list[Mapping[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            limit = PAGE_LIMIT if max_items is None else min(PAGE_LIMIT, max_items - len(items))
            query: dict[str, str | int | list[str]] = {**(params or {}), "limit": limit}
            if cursor is not None:
                query["cursor"] = cursor
            page = self._call("GET", path, _json_list, params=query)
            for entry in page:
                item = entry.get(item_key, entry) if isinstance(entry, Mapping) else None
                if not isinstance(item, Mapping):
                    raise RenderAPIError(
                        f"unexpected list item from Render for GET {path}", method="GET", path=path
                    )
                items.append(item)
            if len(page) < limit or (max_items is not None and len(items) >= max_items):
                return items
            last = page[-1]
            cursor = last.get("cursor") if isinstance(last, Mapping) else None
            if not cursor:
                return items
            if cursor in seen:
                raise RenderAPIError(
                    f"Render repeated a page cursor for GET {path}", method="GET", path=path
                )
            seen.add(cursor)

    def _parse(self, parse: Callable[[Any], T], data: Any, method: str, path: str) -> T:
        try:
            return parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RenderAPIError(
                self._scrub(
                    f"unexpected answer from Render to {method} {path}: {type(exc).__name__} {exc}"
                ),
                method=method,
                path=path,
            ) from None

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        params: Mapping[str, str | int | list[str]] | None = None,
        body: Any = None,
        policy: _Policy = _Policy.IDEMPOTENT,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Send one API call with retries; map failures to typed errors; parse the answer."""
        state = _AttemptState()
        response: httpx.Response | None = None
        try:
            for attempt in self._retrying(method, path, policy):
                with attempt:
                    if state.ambiguous and recover is not None:
                        found = recover()
                        if found is not None:
                            return found
                    response = self._send(method, path, params, body, state)
        except _RetryableStatus as exc:
            raise self._error_for(exc.response, method, path) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, method, path) from None
        assert response is not None  # tenacity either returned, raised, or set it

        if response.status_code >= 400:
            error = self._error_for(response, method, path)
            if state.ambiguous:
                # An earlier attempt may have done the work: a retried DELETE finding nothing
                # left, or a retried create refused because the first one exists.
                if method == "DELETE" and isinstance(error, NotFoundError):
                    return parse(response)
                if recover is not None and isinstance(error, ConflictError):
                    found = recover()
                    if found is not None:
                        return found
            raise error
        return self._parse(parse, response, method, path)

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int | list[str]] | None,
        body: Any,
        state: _AttemptState,
    ) -> httpx.Response:
        """One HTTP exchange; raises _RetryableStatus for answers worth retrying."""
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        try:
            response = self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.TransportError as exc:
            if not isinstance(exc, _NOT_SENT_ERRORS):
                state.ambiguous = True
            raise
        logger.debug("Render API %s %s -> %s", method, path, response.status_code)
        if response.status_code in RETRY_STATUSES:
            if response.status_code >= 500:
                state.ambiguous = True
            raise _RetryableStatus(response, _retry_hint(response))
        return response

    def _retrying(self, method: str, path: str, policy: _Policy) -> Retrying:
        start = self._clock()
        backoff = wait_exponential_jitter(initial=1.0, max=30.0, exp_base=2.0, jitter=1.0)

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, _RetryableStatus):
                return exc.response.status_code == 429 or policy is not _Policy.NOT_IDEMPOTENT
            if isinstance(exc, _NOT_SENT_ERRORS):
                return True
            if isinstance(exc, _TRANSIENT_ERRORS):
                return policy is not _Policy.NOT_IDEMPOTENT
            return False

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RetryableStatus) and exc.retry_after:
                return exc.retry_after
            return float(backoff(state))

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= _MAX_ATTEMPTS:
                return True
            exc = state.outcome.exception() if state.outcome else None
            budget = self.max_retry_time
            if exc is not None and _unreachable(exc):
                budget = min(budget, UNREACHABLE_RETRY_TIME)
            return (self._clock() - start) + state.upcoming_sleep > budget

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RetryableStatus):
                what = f"answered {exc.response.status_code}"
            else:
                what = f"failed ({type(exc).__name__})"
            logger.warning(
                "Render API %s %s %s; retry %d in %.1fs",
                method,
                path,
                what,
                state.attempt_number,
                state.upcoming_sleep,
            )

        return Retrying(
            retry=retry_if_exception(should_retry),
            wait=wait,
            stop=stop,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _error_for(self, response: httpx.Response, method: str, path: str) -> RenderAPIError:
        """Map an error answer to the project's error tree, keeping Render's message."""
        status = response.status_code
        message = self._scrub(_render_message(response))
        text = f"Render API {method} {path} failed ({status}): {message}"
        request_id = _request_id(response)
        if request_id:
            text += f" (request id {request_id})"
        kwargs: dict[str, Any] = {
            "status_code": status,
            "method": method,
            "path": path,
            "request_id": request_id,
        }
        if status in _REFUSAL_STATUSES and _looks_like_free_tier_limit(message):
            return ConflictError(text, hint="a workspace may hold only one free database", **kwargs)
        if status in (401, 403):
            return UnauthorizedError(
                text, hint="check RENDER_API_KEY and its access to this resource", **kwargs
            )
        if status in (404, 410):
            return NotFoundError(text, **kwargs)
        if status in (402, 409):
            return ConflictError(text, **kwargs)
        if status == 429:
            hint = _retry_hint(response)
            return RateLimitedError(
                text,
                hint=f"Render's rate limit resets in {hint:g}s" if hint else "rate limited",
                **kwargs,
            )
        if status >= 500:
            return ServerError(text, **kwargs)
        return RenderAPIError(text, **kwargs)

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str
    ) -> APITimeoutError:
        hint = None
        if isinstance(exc, httpx.TimeoutException):
            what = f"no answer within {self.timeout:g}s ({type(exc).__name__})"
        elif unreachable := _unreachable(exc):
            what = f"could not reach {self.base_url} ({unreachable})"
            hint = (
                "is RENDER_API_URL right? Unset it to use Render itself; a sandbox must "
                "still be running"
                if self.base_url != DEFAULT_BASE_URL
                else "check this machine's network and DNS"
            )
        else:
            what = f"could not reach {self.base_url} ({type(exc).__name__}: {exc})"
        return APITimeoutError(
            self._scrub(f"Render API {method} {path}: {what}"), method=method, path=path, hint=hint
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: the API key never leaves in a message, even if Render echoes it."""
        return secrets.scrub(text, [self._api_key])


# -- response parsers ----------------------------------------------------------------------------


def _json_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or None for an empty body (202, 204)."""
    if not response.content.strip():
        return None
    return response.json()


def _json_list(response: httpx.Response) -> list[Any]:
    data = _json_body(response)
    if data is None:
        return []
    if not isinstance(data, list):
        raise TypeError("expected a JSON list")
    return data


def _ignore_body(response: httpx.Response) -> None:
    return None


def _json_model[M](from_api: Callable[[Mapping[str, Any]], M]) -> Callable[[httpx.Response], M]:
    """A parser that decodes a JSON object body and feeds it to a model's ``from_api``."""

    def parse(response: httpx.Response) -> M:
        data = _json_body(response)
        if not isinstance(data, Mapping):
            raise TypeError("expected a JSON object")
        return from_api(data)

    return parse
