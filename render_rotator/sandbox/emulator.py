"""A local Render API emulator that provisions REAL PostgreSQL databases.

The whole rotation (inspect, freeze, back up, provision, restore, repoint, deploy, retire) can
run and be tested on one machine with no network: this module serves the Render REST calls the
rotation uses, with the paths, JSON keys, status codes and headers of Render's OpenAPI spec and
of real recorded traffic (``shared/render-api/``), on a stdlib HTTP server in a daemon thread.

Creating a Postgres creates a real login role (not a superuser, like Render's user) and a real
database owned by it on a local `Cluster`, so restores meet Render's permission limits. Status
moves ``creating`` -> ``available`` after ``provision_delay`` seconds; deploys move to ``live``
after ``deploy_delay`` seconds (both computed lazily from timestamps, no background ticker).

Choices where neither the spec nor the recordings say what Render does (kept in one place so the
report and the tests can name them):

* A second free database for one owner is refused with **400**
  ``{"id": ..., "message": "cannot have more than one active free tier database"}``: the message
  is Render's own wording (its dashboard/blueprint refusal), and 400 is the only refusal status
  the spec lists for ``POST /postgres`` (no 409 there).
* ``404`` bodies are ``{"message": "not found: <id>"}`` exactly as recorded; every other error
  the emulator makes is ``{"id": <uuid>, "message": ...}`` (the spec's ``error`` schema).
* Postgres ids look like the recorded ones, ``dpg-<20 chars>-a``; the internal host is the id.
* ``databaseName`` gets a random ``_xxxx`` suffix like Render's; ``databaseUser`` gets one too
  (Render keeps the requested user, but roles are cluster-wide here, so two databases asking for
  the same user would collide; the product treats every new database's user as new anyway).
* External connection strings have Render's shape, ``postgresql://user:pw@127.0.0.1:<port>/db``
  with no ``sslmode`` (Render's carry none either), and like Render's they connect over TLS
  only: the cluster has a self-signed certificate and its TCP address refuses plain
  connections, so a client built without TLS fails here as it would against Render.
* Internal connection strings are reachable by default (``internal_reachable=True``): they go
  through the cluster's Unix socket (``postgresql://user:pw@localhost:<port>/db?host=<dir>``),
  the sandbox's private network, where a password login needs no TLS, as inside Render.
  ``internal_reachable=False`` gives Render's exact unreachable
  ``postgresql://user:pw@dpg-xxx-a/db``; `RenderEmulator.resolve_internal_url` maps either
  form to a URL that connects.
* Each database runs on a server of the major version it reports: one cluster per major,
  started on first use from the PostgreSQL installations found (`server_bins`). A version the
  machine cannot serve is refused with 400 (``version "16" is not available ...``).
* Unsupported methods on a known path answer 405 with an ``Allow`` header, any other method
  404 or 405, never 500 or 501. Every answer carries a ``Render-Request-Id`` shaped like
  Render's (``api-<pod>/<token>-<n>``).
* A deploy of a suspended service is allowed (the service stays suspended); resuming a service
  does not start a deploy.
* Services have Render's types (``web_service``, ``private_service``, ``background_worker``,
  ``cron_job``, ``static_site``). Only web services carry ``maintenanceMode``; a PATCH turning
  it on or off for another type answers 400 ``"maintenance mode is only supported for web
  services"`` (the spec gives 400 for PATCH /services/{id}; the wording is ours).
* ``POST .../deploys`` bodies are recorded (`RenderEmulator.deploy_requests`), refused ones too.
  ``deployMode: deploy_only`` beside ``commitId``, ``imageUrl`` or ``clearCache`` is a 400, as
  the spec's DeployMode says. ``deploy_only`` redeploys the last successful build (same commit
  or image, no ``build_in_progress``); a service with no successful build answers 400 (the
  spec lists 400 for this call but not this case's wording: ours).
* Blueprints (``GET /blueprints``, ``GET /blueprints/{id}`` with ``resources``) are records only:
  `RenderEmulator.add_blueprint` marks databases, services and env groups as managed; nothing
  ever syncs.
* The database really exists (and accepts logins) while its record still says ``creating``.
* Free databases get ``expiresAt`` = createdAt + 30 days (without one, createdAt + 30 days
  counts). Past it (on the emulator's clock, `RenderEmulator.now`, which tests move with
  `advance_clock` or by `set_expires_at` in the past) the database is suspended: status
  ``suspended`` with suspender ``billing``, its role may not log in. 14 days later it is deleted.
  A PATCH to a paid plan clears ``expiresAt`` and restores access (``updating_instance`` for
  ``provision_delay`` seconds, then ``available``).
* ``ipAllowList``: omitted or null on create gives Render's default ``0.0.0.0/0``
  ("everywhere"); ``[]`` means no access from outside Render (answered as ``null``, as
  recorded). A list that does not admit this machine (the external URL's address) makes the
  server reject the database's role over TCP (a ``reject`` line in pg_hba.conf); the internal
  URL (the Unix socket) still connects, as services inside Render's network do.

Fault injection (``emulator.faults`` or the control endpoint, see `Faults.apply`) makes the
next requests answer 429/5xx (or every n-th request: ``flaky``), adds latency, drops
connections, fails or queues deploys, keeps new databases ``creating`` forever, seeds
unexpected objects into new databases, or refuses a new free database for a while after a
free one was deleted (``refuse_free_after_delete``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import math
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql as psql

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster, server_bins

log = logging.getLogger("render_rotator.sandbox.emulator")

API_PREFIX = "/v1"
CONTROL_PREFIX = "/_sandbox"

POSTGRES_PLANS = (
    "free", "starter", "standard", "pro", "pro_plus", "custom", "basic_256mb", "basic_1gb",
    "basic_4gb", "pro_4gb", "pro_8gb", "pro_16gb", "pro_32gb", "pro_64gb", "pro_128gb",
    "pro_192gb", "pro_256gb", "pro_384gb", "pro_512gb", "accelerated_16gb", "accelerated_32gb",
    "accelerated_64gb", "accelerated_128gb", "accelerated_256gb", "accelerated_384gb",
    "accelerated_512gb", "accelerated_768gb", "accelerated_1024gb",
)  # fmt: skip
LEGACY_POSTGRES_PLANS = ("starter", "standard", "pro", "pro_plus")
POSTGRES_VERSIONS = tuple(str(v) for v in range(11, 19))
REGIONS = ("frankfurt", "oregon", "ohio", "singapore", "virginia")
FREE_PLAN = "free"
FREE_TIER_DAYS = 30
FREE_TIER_LIMIT_MESSAGE = "cannot have more than one active free tier database"
LEGACY_PLAN_MESSAGE = (
    "Legacy Postgres plans, including '{plan}', are no longer supported for new databases."
)
DEPLOY_FAILURE_STATUSES = ("build_failed", "update_failed", "pre_deploy_failed", "canceled")
SERVICE_TYPES = ("static_site", "web_service", "private_service", "background_worker", "cron_job")
DEPLOY_MODES = ("deploy_only", "build_and_deploy")
# deploy outcomes whose build succeeded (the build exists even if the update failed)
_BUILT_OUTCOMES = ("live", "update_failed", "pre_deploy_failed")
MAINTENANCE_ONLY_WEB_MESSAGE = "maintenance mode is only supported for web services"
DEPLOY_ONLY_CONFLICT_MESSAGE = (
    "deployMode cannot be combined with commitId or imageUrl or clearCache"
)
DEPLOY_ONLY_NO_BUILD_MESSAGE = (
    "deployMode deploy_only requires a previous successful build, and this service has none"
)
_DASHBOARD_KIND = {
    "static_site": "static",
    "web_service": "web",
    "private_service": "pserv",
    "background_worker": "worker",
    "cron_job": "cron",
}
DEFAULT_IMAGE = "docker.io/library/nginx:latest"
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100

# Render's rate-limit buckets as seen in the recordings: limit per window, per kind of call.
RATE_BUCKETS = {"read": 400, "write": 100, "create": 20, "deploy": 10}
RATE_WINDOW = 60.0

_HBA_LOCK = threading.Lock()  # emulators sharing a cluster edit one pg_hba.conf
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # the base32hex of Render's xid-style ids
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECURITY_HEADERS = (
    ("Referrer-Policy", "same-origin"),
    ("Vary", "Origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("X-Xss-Protection", "1; mode=block"),
)


def new_id(prefix: str) -> str:
    """A Render-style id: ``<prefix>-`` and 20 base32hex characters."""
    return prefix + "-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def _suffix(length: int = 4) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def _password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def iso(ts: float) -> str:
    """Render's timestamp format: RFC 3339, microseconds, ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ident(text: str, fallback: str = "app") -> str:
    """A lowercase SQL identifier base from a free-form name (Render derives names this way)."""
    base = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    base = re.sub(r"_+", "_", base) or fallback
    if not base[0].isalpha():
        base = f"{fallback}_{base}"
    return base[:40].rstrip("_")


class EmulatorAPIError(Exception):
    """An error answer of the emulator; raised by its Python API too (status + Render body)."""

    def __init__(self, status: int, message: str, *, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body if body is not None else {"id": str(uuid.uuid4()), "message": message}


def _not_found(what: str) -> EmulatorAPIError:
    return EmulatorAPIError(404, f"not found: {what}", body={"message": f"not found: {what}"})


def _bad_request(message: str) -> EmulatorAPIError:
    return EmulatorAPIError(400, message)


# -- fault injection ---------------------------------------------------------------------------


@dataclass
class _Rule:
    """A request fault: the next `remaining` matching requests fail this way."""

    kind: str  # rate_limit | server_error | drop_connection | client_error
    remaining: int | None
    status: int = 0
    retry_after: float = 1.0
    path_prefix: str | None = None
    method: str | None = None
    after_processing: bool = False
    message: str = ""  # client_error: Render's words in the error body

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return not self.path_prefix or path.startswith(self.path_prefix)

    def describe(self) -> dict[str, Any]:
        return {
            "fault": self.kind,
            "n": self.remaining,
            "status": self.status or None,
            "retry_after": self.retry_after if self.kind == "rate_limit" else None,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "after_processing": self.after_processing,
        }


@dataclass
class _Latency:
    seconds: float
    path_prefix: str | None
    method: str | None


@dataclass
class _Flaky:
    """Every `every`-th matching request fails, cycling through `statuses`."""

    every: int
    statuses: tuple[int, ...]
    retry_after: float | None
    after_processing: bool
    remaining: int | None
    path_prefix: str | None
    method: str | None
    first_only: bool = False
    seen: int = 0
    failed: int = 0
    calls: set[tuple[str, str]] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "statuses": list(self.statuses),
            "retry_after": self.retry_after,
            "after_processing": self.after_processing,
            "n": self.remaining,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "first_only": self.first_only,
            "failed": self.failed,
        }


@dataclass
class _Seed:
    sql: str
    remaining: int | None


@dataclass
class _Hook:
    callback: Callable[[str, str], None]
    method: str | None
    path_prefix: str | None
    remaining: int | None


@dataclass
class _DeployFailure:
    remaining: int | None
    service_id: str | None
    status: str


def _norm_prefix(path_prefix: str | None) -> str | None:
    if not path_prefix:
        return None
    if path_prefix.startswith(API_PREFIX + "/"):
        path_prefix = path_prefix[len(API_PREFIX) :]
    return path_prefix if path_prefix.startswith("/") else "/" + path_prefix


def _norm_method(method: str | None) -> str | None:
    return method.upper() if method else None


def _count(n: int | None) -> int | None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError("n must be a positive integer or null (= until cleared)")
    return n


class Faults:
    """Runtime-switchable failures, so retries, waits and rollbacks can be tested for real.

    Every method is thread-safe and takes effect on the next request. ``n=None`` means "until
    cleared". ``path_prefix`` is an API path such as ``"/postgres"`` (a leading ``/v1`` is
    accepted); ``method`` an HTTP method. Faults never hit the control endpoint.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._latency: list[_Latency] = []
        self._deploy_failures: list[_DeployFailure] = []
        self._queued_deploys = 0
        self._never_available = False
        self._flaky: list[_Flaky] = []
        self._seeds: list[_Seed] = []
        self._hooks: list[_Hook] = []
        self._free_slot: tuple[int | None, float | None] | None = None
        self._free_slot_blocked: dict[str, list[Any]] = {}  # owner -> [attempts, until]

    def rate_limit(
        self,
        n: int | None = 1,
        retry_after: float = 1,
        path_prefix: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next `n` matching requests get 429 with ``Retry-After: retry_after``."""
        if retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        self._add(
            _Rule("rate_limit", _count(n), 429, float(retry_after), _norm_prefix(path_prefix),
                  _norm_method(method))
        )  # fmt: skip

    def server_error(
        self,
        n: int | None = 1,
        status: int = 503,
        path_prefix: str | None = None,
        method: str | None = None,
        after_processing: bool = False,
    ) -> None:
        """The next `n` matching requests get `status` (5xx). With ``after_processing`` the
        request is carried out first and only the answer is lost (tests idempotent retries)."""
        if not 500 <= int(status) <= 599:
            raise ValueError("status must be a 5xx code")
        self._add(
            _Rule("server_error", _count(n), int(status), 0.0, _norm_prefix(path_prefix),
                  _norm_method(method), bool(after_processing))
        )  # fmt: skip

    def client_error(
        self,
        n: int | None = 1,
        status: int = 400,
        message: str = "bad request",
        path_prefix: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next `n` matching requests are refused with `status` (4xx) and `message`, as
        Render refuses a request it will not carry out (never retried by the client)."""
        if not 400 <= int(status) <= 499 or int(status) == 429:
            raise ValueError("status must be a 4xx code other than 429 (see rate_limit)")
        self._add(
            _Rule("client_error", _count(n), int(status), 0.0, _norm_prefix(path_prefix),
                  _norm_method(method), message=str(message))
        )  # fmt: skip

    def drop_connection(
        self, n: int | None = 1, path_prefix: str | None = None, method: str | None = None
    ) -> None:
        """The next `n` matching requests get no answer: the connection is closed."""
        self._add(
            _Rule("drop_connection", _count(n), 0, 0.0, _norm_prefix(path_prefix),
                  _norm_method(method))
        )  # fmt: skip

    def latency(
        self, seconds: float, path_prefix: str | None = None, method: str | None = None
    ) -> None:
        """Delay every matching answer by `seconds` until cleared; ``latency(0)`` removes all."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            if seconds == 0:
                self._latency.clear()
            else:
                self._latency.append(
                    _Latency(float(seconds), _norm_prefix(path_prefix), _norm_method(method))
                )

    def fail_deploys(
        self, n: int | None = 1, service_id: str | None = None, status: str = "build_failed"
    ) -> None:
        """The next `n` deploys (of `service_id`, or any) end in `status` instead of live."""
        if status not in DEPLOY_FAILURE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(DEPLOY_FAILURE_STATUSES)}")
        with self._lock:
            self._deploy_failures.append(_DeployFailure(_count(n), service_id, status))

    def fail_next_deploy(self, service_id: str | None = None, status: str = "build_failed") -> None:
        """The next deploy (of `service_id`, or any) fails with `status`."""
        self.fail_deploys(1, service_id=service_id, status=status)

    def queue_deploys(self, n: int = 1) -> None:
        """The next `n` deploy triggers answer 202 with an empty body (Render's "queued");
        the deploy exists, starts ``queued`` and is found through the deploy list."""
        with self._lock:
            self._queued_deploys += _count(n) or 0

    def flaky(
        self,
        every: int = 2,
        statuses: Iterable[int] = (429, 503),
        retry_after: float | None = 0.01,
        after_processing: bool = False,
        n: int | None = None,
        path_prefix: str | None = None,
        method: str | None = None,
        first_only: bool = False,
    ) -> None:
        """Every `every`-th matching request fails, cycling through `statuses` (429 or 5xx),
        until `n` failures were served (``None``: until cleared). With `first_only` instead,
        the first request of each distinct method and path fails and later ones pass: every
        step of a workflow meets one failure. `retry_after` is sent as ``Retry-After`` (on
        5xx too, as Render may); with `after_processing` a 5xx request is carried out first
        and only its answer is lost."""
        codes = tuple(int(code) for code in statuses)
        if not codes or any(code != 429 and not 500 <= code <= 599 for code in codes):
            raise ValueError("statuses must be 429 or 5xx codes")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError("every must be a positive integer")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            self._flaky.append(
                _Flaky(every, codes, None if retry_after is None else float(retry_after),
                       bool(after_processing), _count(n), _norm_prefix(path_prefix),
                       _norm_method(method), bool(first_only))
            )  # fmt: skip

    def seed_new_databases(self, sql: str, n: int | None = 1) -> None:
        """Run `sql` (as the database's own user) in the next `n` databases created, right
        after they exist: objects Render would never put there, so a copy into them differs
        from its source (tests verification)."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("sql must be a non-empty string")
        with self._lock:
            self._seeds.append(_Seed(sql, _count(n)))

    def on_request(
        self,
        callback: Callable[[str, str], None],
        *,
        method: str | None = None,
        path_prefix: str | None = None,
        n: int | None = 1,
    ) -> None:
        """Call `callback(method, path)` when a matching request arrives, before Render
        acts on it (in-process tests only): something happening elsewhere at exactly that
        step, such as a client writing to a database."""
        with self._lock:
            self._hooks.append(
                _Hook(callback, _norm_method(method), _norm_prefix(path_prefix), _count(n))
            )

    def refuse_free_after_delete(self, n: int | None = None, seconds: float | None = None) -> None:
        """After a free database is deleted, its workspace's next `n` requests for a new free
        database (or all of them for `seconds` on the emulator's clock) are refused exactly as
        Render refuses a second free database: Render frees the slot only after a while."""
        if n is None and seconds is None:
            raise ValueError("give n (attempts) or seconds")
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._free_slot = (_count(n), None if seconds is None else float(seconds))

    def never_available(self, enabled: bool = True) -> None:
        """While enabled, databases created stay ``creating``; disabling releases them."""
        with self._lock:
            self._never_available = bool(enabled)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._rules.clear()
            self._latency.clear()
            self._deploy_failures.clear()
            self._queued_deploys = 0
            self._never_available = False
            self._flaky.clear()
            self._seeds.clear()
            self._hooks.clear()
            self._free_slot = None
            self._free_slot_blocked.clear()

    def describe(self) -> dict[str, Any]:
        """What is armed right now (the control endpoint's answer)."""
        with self._lock:
            return {
                "rules": [r.describe() for r in self._rules],
                "latency": [
                    {"seconds": x.seconds, "path_prefix": x.path_prefix, "method": x.method}
                    for x in self._latency
                ],
                "fail_deploys": [
                    {"n": f.remaining, "service_id": f.service_id, "status": f.status}
                    for f in self._deploy_failures
                ],
                "queue_deploys": self._queued_deploys,
                "never_available": self._never_available,
                "flaky": [f.describe() for f in self._flaky],
                "seed_new_databases": [s.remaining for s in self._seeds],
                "refuse_free_after_delete": (
                    {"n": self._free_slot[0], "seconds": self._free_slot[1]}
                    if self._free_slot
                    else None
                ),
            }

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Arm one fault from a JSON object: ``{"fault": "<method name>", **arguments}``.

        e.g. ``{"fault": "rate_limit", "n": 2, "retry_after": 1, "path_prefix": "/postgres"}``,
        ``{"fault": "fail_next_deploy", "service_id": "srv-..."}``, ``{"fault": "clear"}``.
        Raises ValueError on an unknown fault or bad arguments.
        """
        if not isinstance(spec, Mapping):
            raise ValueError("a fault must be a JSON object with a 'fault' key")
        actions: dict[str, Callable[..., None]] = {
            "rate_limit": self.rate_limit,
            "server_error": self.server_error,
            "client_error": self.client_error,
            "drop_connection": self.drop_connection,
            "latency": self.latency,
            "fail_deploys": self.fail_deploys,
            "fail_next_deploy": self.fail_next_deploy,
            "queue_deploys": self.queue_deploys,
            "never_available": self.never_available,
            "flaky": self.flaky,
            "seed_new_databases": self.seed_new_databases,
            "refuse_free_after_delete": self.refuse_free_after_delete,
            "clear": self.clear,
        }
        kwargs = dict(spec)
        name = kwargs.pop("fault", None)
        if name not in actions:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(actions))}")
        try:
            actions[name](**kwargs)
        except TypeError as exc:
            raise ValueError(f"bad arguments for {name}: {exc}") from None

    # -- used by the emulator ------------------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def _take_flaky(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for flaky in self._flaky:
                if flaky.method and flaky.method != method:
                    continue
                if flaky.path_prefix and not path.startswith(flaky.path_prefix):
                    continue
                flaky.seen += 1
                if flaky.first_only:
                    if (method, path) in flaky.calls:
                        return None
                    flaky.calls.add((method, path))
                elif flaky.seen % flaky.every:
                    return None
                status = flaky.statuses[flaky.failed % len(flaky.statuses)]
                flaky.failed += 1
                if flaky.remaining is not None:
                    flaky.remaining -= 1
                    if flaky.remaining <= 0:
                        self._flaky.remove(flaky)
                kind = "rate_limit" if status == 429 else "server_error"
                return _Rule(
                    kind,
                    None,
                    status,
                    flaky.retry_after or 0.0,
                    after_processing=flaky.after_processing and status != 429,
                )
        return None

    def _take_hooks(self, method: str, path: str) -> list[Callable[[str, str], None]]:
        due = []
        with self._lock:
            for hook in list(self._hooks):
                if hook.method and hook.method != method:
                    continue
                if hook.path_prefix and not path.startswith(hook.path_prefix):
                    continue
                due.append(hook.callback)
                if hook.remaining is not None:
                    hook.remaining -= 1
                    if hook.remaining <= 0:
                        self._hooks.remove(hook)
        return due

    def _take_seed(self) -> str | None:
        with self._lock:
            for seed in self._seeds:
                if seed.remaining is not None:
                    seed.remaining -= 1
                    if seed.remaining <= 0:
                        self._seeds.remove(seed)
                return seed.sql
        return None

    def _latency_for(self, method: str, path: str) -> float:
        with self._lock:
            return sum(
                x.seconds
                for x in self._latency
                if (not x.method or x.method == method)
                and (not x.path_prefix or path.startswith(x.path_prefix))
            )

    def _take_deploy_failure(self, service_id: str) -> str | None:
        with self._lock:
            for failure in self._deploy_failures:
                if failure.service_id in (None, service_id):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._deploy_failures.remove(failure)
                    return failure.status
        return None

    def _take_queue(self) -> bool:
        with self._lock:
            if self._queued_deploys > 0:
                self._queued_deploys -= 1
                return True
        return False

    def _free_deleted(self, owner_id: str, now: float) -> None:
        """A free database of `owner_id` was deleted: start refusing its slot, if armed."""
        with self._lock:
            if self._free_slot is not None:
                n, seconds = self._free_slot
                until = None if seconds is None else now + seconds
                self._free_slot_blocked[owner_id] = [n, until]

    def _take_free_refusal(self, owner_id: str, now: float) -> bool:
        """Whether this request for a new free database of `owner_id` is refused."""
        with self._lock:
            blocked = self._free_slot_blocked.get(owner_id)
            if blocked is None:
                return False
            attempts, until = blocked
            if until is not None and now >= until:
                del self._free_slot_blocked[owner_id]
                return False
            if attempts is not None:
                if attempts <= 0:
                    del self._free_slot_blocked[owner_id]
                    return False
                blocked[0] = attempts - 1
            return True

    @property
    def never_available_enabled(self) -> bool:
        with self._lock:
            return self._never_available


# -- state records -----------------------------------------------------------------------------


@dataclass
class _Owner:
    id: str
    seq: int
    name: str
    email: str
    type: str

    def json(self) -> dict[str, Any]:
        return {"email": self.email, "id": self.id, "name": self.name, "type": self.type}


@dataclass
class _Postgres:
    id: str
    seq: int
    name: str
    owner_id: str
    plan: str
    version: str
    region: str
    database_name: str
    database_user: str
    password: str = field(repr=False)
    created: float
    updated: float
    ready_at: float
    held: bool = False
    provisioned: bool = False
    suspended: bool = False
    ip_allow_list: list[dict[str, str]] = field(default_factory=list)
    disk_size_gb: int | None = None
    high_availability: bool = False
    disk_autoscaling: bool = False
    environment_id: str | None = None
    expires_at: float | None = None
    expired: bool = False  # suspended by its expiry (a free plan past expiresAt)
    updating_until: float = 0.0  # a plan change in progress

    def expiry(self) -> float | None:
        """When a free database expires: expiresAt, else createdAt + 30 days."""
        if self.plan != FREE_PLAN:
            return None
        return self.expires_at if self.expires_at is not None else self.created + FREE_DAY_SPAN

    @property
    def major(self) -> int:
        """The server major this database runs on (its reported ``version``)."""
        return int(self.version)


FREE_DAY_SPAN = FREE_TIER_DAYS * 86400.0
DELETION_GRACE = 14 * 86400.0  # Render deletes an expired free database 14 days later
EVERYWHERE = {"cidrBlock": "0.0.0.0/0", "description": "everywhere"}


@dataclass
class _EnvVar:
    key: str
    value: str = field(repr=False)
    seq: int


@dataclass
class _Deploy:
    id: str
    seq: int
    service_id: str
    created: float
    duration: float
    outcome: str  # "live" or a failure status
    trigger: str
    git: bool
    commit: dict[str, str] | None
    image: dict[str, str] | None
    queued_for: float = 0.0
    built: bool = True  # False: deploy_only, the build of an earlier deploy was reused


@dataclass
class _Service:
    id: str
    seq: int
    name: str
    owner_id: str
    created: float
    updated: float
    region: str
    plan: str
    repo: str | None
    branch: str | None
    image_path: str | None
    env_vars: dict[str, _EnvVar] = field(default_factory=dict)
    suspended: bool = False
    maintenance: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "uri": ""})
    auto_deploy: str = "yes"
    health_check_path: str = ""
    deploys: list[_Deploy] = field(default_factory=list)
    environment_id: str | None = None
    type: str = "web_service"
    deploy_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-") or self.id


@dataclass
class _Blueprint:
    id: str
    seq: int
    name: str
    owner_id: str
    repo: str
    branch: str
    path: str
    auto_sync: bool
    created: float
    resource_ids: list[str] = field(default_factory=list)


@dataclass
class _EnvGroup:
    id: str
    seq: int
    name: str
    owner_id: str
    created: float
    updated: float
    env_vars: list[_EnvVar] = field(default_factory=list)  # newest first, as Render shows them
    service_ids: list[str] = field(default_factory=list)
    environment_id: str | None = None


# -- HTTP plumbing -----------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str  # API path without /v1, e.g. /postgres/dpg-...-a
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str

    def json(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise _bad_request("invalid JSON in request body") from None

    def obj(self, *, required: bool = True) -> dict[str, Any]:
        data = self.json()
        if data is None and not required:
            return {}
        if not isinstance(data, dict):
            raise _bad_request("request body must be a JSON object")
        return data

    def param(self, name: str) -> list[str]:
        """A query parameter's values: repeated and comma-separated forms both count."""
        values: list[str] = []
        for raw in self.query.get(name, []):
            values.extend(v for v in raw.split(",") if v)
        return values


@dataclass
class _Reply:
    status: int
    body: Any = None
    empty: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False

    def payload(self) -> bytes:
        if self.empty or self.status == 204:
            return b""
        return json.dumps(self.body, separators=(",", ":")).encode()


def _error_reply(err: EmulatorAPIError) -> _Reply:
    return _Reply(err.status, err.body)


def _method_not_allowed(method: str, allowed: Iterable[str]) -> _Reply:
    """405 in Render's error shape, with the ``Allow`` header HTTP asks for."""
    methods = sorted(set(allowed))
    reply = _Reply(
        405, {"id": str(uuid.uuid4()), "message": f"method {method} not allowed on this path"}
    )
    reply.headers.append(("Allow", ", ".join(methods)))
    return reply


_REQUEST_POD = "emulator-" + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def _request_id(seq: int) -> str:
    """A ``Render-Request-Id`` shaped like Render's ``api-<pod>/<token>-<n>``."""
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))
    return f"api-{_REQUEST_POD}/{token}-{seq}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: RenderEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds
    # the body until the client's delayed ACK (~40 ms on every keep-alive request)
    disable_nagle_algorithm = True
    server_version = "render-emulator"
    sys_version = ""
    timeout = 60

    def _serve(self) -> None:
        emulator = cast(_Server, self.server).emulator
        body = self._read_body()
        reply = emulator._handle_http(
            self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
        )
        if reply.drop:
            self.close_connection = True
            return
        payload = reply.payload()
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def __getattr__(self, name: str) -> Any:
        # http.server answers 501 for any method without a do_<METHOD>; Render answers 405
        # (or 404 for an unknown path), so every method goes through the emulator.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("emulator: " + format, *args)


class _RateLimiter:
    """Counts requests per bucket and window, to fill in Ratelimit-* like Render does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    @staticmethod
    def bucket(method: str, path: str) -> str:
        if method == "GET":
            return "read"
        if method == "POST" and path in ("/postgres", "/services", "/env-groups"):
            return "create"
        if method == "POST" and path.endswith("/deploys"):
            return "deploy"
        return "write"

    def hit(self, bucket: str, now: float) -> tuple[int, int, int, bool]:
        """Count one request; (limit, remaining, reset seconds, over the limit)."""
        limit = RATE_BUCKETS[bucket]
        with self._lock:
            start, used = self._windows.get(bucket, (now, 0))
            if now - start >= RATE_WINDOW:
                start, used = now, 0
            used += 1
            self._windows[bucket] = (start, used)
        reset = max(0, math.ceil(start + RATE_WINDOW - now))
        return limit, max(0, limit - used), reset, used > limit


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- routes ------------------------------------------------------------------------------------

_SEG = r"([^/]+)"
_ROUTE_TABLE: list[tuple[str, str, str]] = [
    ("GET", r"/owners", "list_owners"),
    ("GET", rf"/owners/{_SEG}", "get_owner"),
    ("GET", r"/postgres", "list_postgres"),
    ("POST", r"/postgres", "create_postgres"),
    ("GET", rf"/postgres/{_SEG}", "get_postgres"),
    ("PATCH", rf"/postgres/{_SEG}", "update_postgres"),
    ("DELETE", rf"/postgres/{_SEG}", "delete_postgres"),
    ("GET", rf"/postgres/{_SEG}/connection-info", "connection_info"),
    ("POST", rf"/postgres/{_SEG}/suspend", "suspend_postgres"),
    ("POST", rf"/postgres/{_SEG}/resume", "resume_postgres"),
    ("GET", r"/services", "list_services"),
    ("GET", rf"/services/{_SEG}", "get_service"),
    ("PATCH", rf"/services/{_SEG}", "update_service"),
    ("GET", rf"/services/{_SEG}/env-vars", "list_env_vars"),
    ("PUT", rf"/services/{_SEG}/env-vars", "replace_env_vars"),
    ("GET", rf"/services/{_SEG}/env-vars/{_SEG}", "get_env_var"),
    ("PUT", rf"/services/{_SEG}/env-vars/{_SEG}", "put_env_var"),
    ("DELETE", rf"/services/{_SEG}/env-vars/{_SEG}", "delete_env_var"),
    ("POST", rf"/services/{_SEG}/suspend", "suspend_service"),
    ("POST", rf"/services/{_SEG}/resume", "resume_service"),
    ("GET", rf"/services/{_SEG}/deploys", "list_deploys"),
    ("POST", rf"/services/{_SEG}/deploys", "create_deploy"),
    ("GET", rf"/services/{_SEG}/deploys/{_SEG}", "get_deploy"),
    ("GET", r"/env-groups", "list_env_groups"),
    ("GET", rf"/env-groups/{_SEG}", "get_env_group"),
    ("PATCH", rf"/env-groups/{_SEG}", "update_env_group"),
    ("GET", rf"/env-groups/{_SEG}/env-vars/{_SEG}", "get_env_group_var"),
    ("PUT", rf"/env-groups/{_SEG}/env-vars/{_SEG}", "put_env_group_var"),
    ("DELETE", rf"/env-groups/{_SEG}/env-vars/{_SEG}", "delete_env_group_var"),
    ("GET", r"/blueprints", "list_blueprints"),
    ("GET", rf"/blueprints/{_SEG}", "get_blueprint"),
]
_ROUTES = [(m, re.compile(p + "$"), h) for m, p, h in _ROUTE_TABLE]


# -- the emulator ------------------------------------------------------------------------------


class RenderEmulator:
    """A Render API on ``http://127.0.0.1:PORT/v1`` backed by real PostgreSQL clusters.

    ``with RenderEmulator(cluster, provision_delay=0.2) as emu: emu.base_url, emu.api_key``.
    `cluster` (TLS, as `Cluster` makes by default) serves its own major; databases of other
    majors get a cluster the emulator starts on first use and stops with itself. Stopping
    it drops every database and role it created.
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
    ) -> None:
        if not cluster.tls:
            raise ValueError(
                "the emulator needs a cluster with TLS, as Render's external URLs require it: "
                "use Cluster() (tls=True is the default), not Cluster(tls=False)"
            )
        self.cluster = cluster
        self._clusters: dict[int, Cluster] = {cluster.major: cluster}
        self._started_clusters: list[Cluster] = []
        self._cluster_lock = threading.Lock()
        self.api_key = api_key or "rnd_" + secrets.token_urlsafe(24)
        self.host = host
        self.provision_delay = float(provision_delay)
        self.deploy_delay = float(deploy_delay)
        self.internal_reachable = internal_reachable
        self.enforce_rate_limits = enforce_rate_limits
        self.faults = Faults()
        self.clock_offset = 0.0  # seconds added to the wall clock: see advance_clock()
        self.requests: list[tuple[str, str, int]] = []
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._seq = 0
        self._limiter = _RateLimiter()
        self._owners: dict[str, _Owner] = {}
        self._postgres: dict[str, _Postgres] = {}
        self._services: dict[str, _Service] = {}
        self._env_groups: dict[str, _EnvGroup] = {}
        self._blueprints: dict[str, _Blueprint] = {}
        # per cluster (by data directory): roles whose allow list shuts this machine out
        self._shut_out: dict[str, tuple[Cluster, set[str]]] = {}
        self._hba_tag = f"render-emulator {uuid.uuid4().hex[:12]}"
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
        """Serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="render-emulator", kwargs={"poll_interval": 0.1}
        )
        self._thread.daemon = True
        self._thread.start()
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
        with self._lock:
            leftovers = list(self._postgres.values())
            self._postgres.clear()
            shut_out, self._shut_out = list(self._shut_out.values()), {}
        for pg in leftovers:
            with contextlib.suppress(Exception):
                self._drop_database(pg)
        for cluster, users in shut_out:
            if users:
                with contextlib.suppress(Exception):
                    self._write_hba(cluster, [])
        self._stop_started_clusters()

    def __enter__(self) -> RenderEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- Python API: set-up helpers ---------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

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
        owner = _Owner(owner_id or new_id("tea"), self._next_seq(), name, email, type)
        with self._lock:
            self._owners[owner.id] = owner
        return owner.id

    def _owner_or_default(self, owner_id: str | None) -> str:
        owner_id = owner_id or self.default_owner_id
        with self._lock:
            if owner_id is None or owner_id not in self._owners:
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
        now = time.time()
        svc = _Service(
            id=new_id("srv"),
            seq=self._next_seq(),
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
            svc.env_vars[key] = _EnvVar(key, value, self._next_seq())
        first = self._new_deploy(svc, now - 90, 30.0, initial_deploy, "deployed_by_render", None)
        svc.deploys.append(first)
        with self._lock:
            self._services[svc.id] = svc
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
        now = time.time()
        group = _EnvGroup(new_id("evg"), self._next_seq(), name, owner, now, now)
        for key, value in (env_vars or {}).items():
            group.env_vars.insert(0, _EnvVar(key, value, self._next_seq()))
        with self._lock:
            for sid in service_ids:
                if sid not in self._services:
                    raise ValueError(f"unknown service {sid!r}")
                group.service_ids.append(sid)
            self._env_groups[group.id] = group
        return group.id

    def create_postgres(self, **fields: Any) -> dict[str, Any]:
        """Provision a database exactly as ``POST /postgres`` does (camelCase fields);
        returns the JSON Render would answer. Raises EmulatorAPIError on refusal."""
        body = dict(fields)
        if "ownerId" not in body and self.default_owner_id:
            body["ownerId"] = self.default_owner_id
        pg = self._create_postgres(body)
        with self._lock:
            return self._postgres_json(pg, self.now())

    def wait_for_postgres(
        self, postgres_id: str, status: str = "available", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Block until the database has `status`; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.postgres(postgres_id)
            if current["status"] == status:
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{postgres_id} still {current['status']!r} after {timeout:g}s")
            time.sleep(0.02)

    def delete_postgres(self, postgres_id: str) -> None:
        """Delete a database as ``DELETE /postgres/{id}`` does."""
        self._delete_postgres(postgres_id)

    def set_expires_at(self, postgres_id: str, when: datetime | None) -> None:
        """Move a database's ``expiresAt`` (e.g. to test "expiring within N days"); a time
        already past expires a free database at once. None: Render gave no expiresAt (a free
        database then expires 30 days after its createdAt)."""
        with self._lock:
            pg = self._get_pg(postgres_id)
            pg.expires_at = when.timestamp() if when is not None else None
        self._tick()

    def set_created_at(self, postgres_id: str, when: datetime) -> None:
        """Move a database's ``createdAt`` (its expiry, without expiresAt, counts from it)."""
        with self._lock:
            self._get_pg(postgres_id).created = when.timestamp()
        self._tick()

    # -- the clock and expiry --------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock for databases (epoch seconds): the wall clock plus
        `clock_offset`, so tests can move past an expiry without waiting for it."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward; expiries and deletions that fall due happen."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self.clock_offset += float(seconds)
        self._tick()

    def _tick(self) -> None:
        """Apply what the clock says, as Render does: a free database past its expiry is
        suspended (its role may no longer log in); 14 days later it is deleted."""
        now = self.now()
        to_suspend, to_delete = [], []
        with self._lock:
            for pg in list(self._postgres.values()):
                expiry = pg.expiry()
                if expiry is None or now < expiry:
                    continue
                if now >= expiry + DELETION_GRACE:
                    del self._postgres[pg.id]
                    to_delete.append(pg)
                elif not pg.expired:
                    pg.expired = True
                    to_suspend.append(pg)
        for pg in to_suspend:
            self._set_login(pg, False)
            log.info("%s (%s) expired: suspended", pg.id, pg.name)
        for pg in to_delete:
            with contextlib.suppress(Exception):
                self._drop_database(pg)
                self._apply_allow_list(pg, dropped=True)
            log.info("%s (%s) deleted 14 days after it expired", pg.id, pg.name)

    def resolve_internal_url(self, url: str) -> str:
        """A URL that really connects for an internal connection string of this emulator.

        ``postgresql://u:p@dpg-xxx-a/db`` (Render's form, ``internal_reachable=False``) becomes
        the database's Unix-socket URL (``...@localhost:<port>/db?host=<dir>``, the sandbox's
        private network); any other URL is returned unchanged.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        with self._lock:
            pg = self._postgres.get(host)
        if not (pg or re.fullmatch(r"dpg-[a-z0-9]+-[a-z]", host)):
            return url
        cluster = self._cluster_of(pg) if pg else self.cluster
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"localhost:{cluster.port}"
        query = "&".join(
            q for q in (parts.query, "host=" + quote(str(cluster.socket_dir), safe="")) if q
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    # -- clusters: one per major ------------------------------------------------------------

    def servable_versions(self) -> list[str]:
        """The majors this emulator can provision: running clusters and installed servers."""
        majors = set(self._clusters) | set(server_bins())
        return [v for v in POSTGRES_VERSIONS if int(v) in majors]

    def _cluster_for_version(self, version: str) -> Cluster:
        """The running cluster of `version`, started now if needed; 400 if none can be."""
        major = int(version)
        with self._cluster_lock:
            cluster = self._clusters.get(major)
            if cluster is not None:
                return cluster
            if major not in server_bins():
                raise _bad_request(
                    f'version "{version}" is not available in this sandbox: it serves '
                    + ", ".join(self.servable_versions())
                    + " (install that PostgreSQL server to add it)"
                )
            cluster = Cluster(major, tls=True)
            try:
                cluster.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    cluster.stop()
                log.error("starting a PostgreSQL %s cluster failed: %s", major, exc)
                raise EmulatorAPIError(500, "failed to provision the database") from exc
            self._clusters[major] = cluster
            self._started_clusters.append(cluster)
            return cluster

    def _cluster_of(self, pg: _Postgres) -> Cluster:
        with self._cluster_lock:
            return self._clusters.get(pg.major, self.cluster)

    def _stop_started_clusters(self) -> None:
        with self._cluster_lock:
            started, self._started_clusters = self._started_clusters, []
            for cluster in started:
                self._clusters.pop(cluster.major, None)
        for cluster in started:
            with contextlib.suppress(Exception):
                cluster.stop()

    # -- Python API: read helpers for tests ----------------------------------------------------

    def postgres_ids(self) -> list[str]:
        with self._lock:
            return [pg.id for pg in sorted(self._postgres.values(), key=lambda p: p.seq)]

    def postgres(self, postgres_id: str) -> dict[str, Any]:
        """The database's JSON as ``GET /postgres/{id}`` answers it (KeyError if unknown)."""
        self._tick()
        with self._lock:
            pg = self._postgres.get(postgres_id)
            if pg is None:
                raise KeyError(postgres_id)
            return self._postgres_json(pg, self.now())

    def connection_info(self, postgres_id: str) -> dict[str, str]:
        with self._lock:
            pg = self._postgres.get(postgres_id)
            if pg is None:
                raise KeyError(postgres_id)
            return self._connection_info_json(pg)

    def service(self, service_id: str) -> dict[str, Any]:
        with self._lock:
            return self._service_json(self._services[service_id])

    def env_vars(self, service_id: str) -> dict[str, str]:
        """A service's env vars as a plain dict."""
        with self._lock:
            return {k: v.value for k, v in self._services[service_id].env_vars.items()}

    def env_group_vars(self, group_id: str) -> dict[str, str]:
        with self._lock:
            return {v.key: v.value for v in self._env_groups[group_id].env_vars}

    def deploy_requests(self, service_id: str) -> list[dict[str, Any]]:
        """Every ``POST .../deploys`` body this service received, oldest first (refused ones
        too; an empty body is ``{}``)."""
        with self._lock:
            return [dict(body) for body in self._services[service_id].deploy_requests]

    def deploys(self, service_id: str) -> list[dict[str, Any]]:
        """A service's deploys, newest first, as ``GET .../deploys/{id}`` answers them."""
        now = time.time()
        with self._lock:
            svc = self._services[service_id]
            return [self._deploy_json(svc, d, now) for d in reversed(svc.deploys)]

    def state_snapshot(self) -> dict[str, Any]:
        """Everything, as plain data: owners, databases, services, env groups (no passwords
        except inside env var values, which hold connection strings by design)."""
        self._tick()
        now, pg_now = time.time(), self.now()
        with self._lock:
            return {
                "owners": [o.json() for o in self._owners.values()],
                "postgres": {
                    pg.id: self._postgres_json(pg, pg_now)
                    for pg in sorted(self._postgres.values(), key=lambda p: p.seq)
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
                            for dj in (self._deploy_json(s, d, now) for d in reversed(s.deploys))
                        ],
                    }
                    for s in self._services.values()
                },
                "envGroups": {
                    g.id: {
                        "name": g.name,
                        "envVars": {v.key: v.value for v in g.env_vars},
                        "serviceIds": list(g.service_ids),
                    }
                    for g in self._env_groups.values()
                },
            }

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- HTTP entry point ----------------------------------------------------------------------

    def _handle_http(
        self, method: str, target: str, headers: dict[str, str], body: bytes, client: str
    ) -> _Reply:
        split = urlsplit(target)
        raw_path = split.path
        path = raw_path[len(API_PREFIX) :] if raw_path.startswith(API_PREFIX + "/") else None
        if raw_path == API_PREFIX:
            path = ""
        if raw_path.startswith(CONTROL_PREFIX):
            path = raw_path
        lower = {k.lower(): v for k, v in headers.items()}
        if path is None:
            return self._finish(method, raw_path, _error_reply(_not_found(raw_path)), None)
        req = _Request(
            method=method,
            path=path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=lower,
            body=body,
            client=client,
        )
        if path.startswith(CONTROL_PREFIX):
            return self._handle_control(req)
        if not self._authorized(lower.get("authorization", "")):
            return self._finish(
                method, path, _Reply(401, {"id": str(uuid.uuid4()), "message": "unauthorized"}),
                None,
            )  # fmt: skip
        for hook in self.faults._take_hooks(method, path):
            hook(method, path)
        delay = self.faults._latency_for(method, path)
        if delay:
            time.sleep(delay)
        bucket = self._limiter.bucket(method, path)
        limits = self._limiter.hit(bucket, time.time())
        rule = self.faults._take_rule(method, path) or self.faults._take_flaky(method, path)
        if rule is not None and not rule.after_processing:
            return self._finish(method, path, self._fault_reply(rule), limits)
        if self.enforce_rate_limits and limits[3]:
            reply = _Reply(429, {"id": str(uuid.uuid4()), "message": "rate limit exceeded"})
            reply.headers.append(("Retry-After", str(limits[2])))
            return self._finish(method, path, reply, limits)
        try:
            self._tick()
            reply = self._dispatch(req)
        except EmulatorAPIError as err:
            reply = _error_reply(err)
        except Exception:
            log.exception("emulator failed on %s %s", method, path)
            reply = _Reply(500, {"id": str(uuid.uuid4()), "message": "internal server error"})
        if rule is not None:
            reply = self._fault_reply(rule)
        return self._finish(method, path, reply, limits)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return secrets.compare_digest(token.strip().encode(), self.api_key.encode())

    @staticmethod
    def _fault_reply(rule: _Rule) -> _Reply:
        if rule.kind == "drop_connection":
            return _Reply(0, drop=True)
        if rule.kind == "client_error":
            return _Reply(rule.status, {"id": str(uuid.uuid4()), "message": rule.message})
        if rule.kind == "rate_limit":
            reply = _Reply(429, {"id": str(uuid.uuid4()), "message": "rate limit exceeded"})
            reply.headers.append(("Retry-After", _format_seconds(rule.retry_after)))
            return reply
        messages = {500: "internal server error", 502: "bad gateway", 503: "service unavailable",
                    504: "gateway timeout"}  # fmt: skip
        message = messages.get(rule.status, "server error")
        reply = _Reply(rule.status, {"id": str(uuid.uuid4()), "message": message})
        if rule.retry_after > 0:  # only flaky() sets one on a 5xx
            reply.headers.append(("Retry-After", _format_seconds(rule.retry_after)))
        return reply

    def _finish(
        self,
        method: str,
        path: str,
        reply: _Reply,
        limits: tuple[int, int, int, bool] | None,
    ) -> _Reply:
        with self._lock:
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
            ("Render-Request-Id", _request_id(self._next_seq())),
            *_SECURITY_HEADERS,
        ]
        reply.headers = headers + reply.headers
        return reply

    def _handle_control(self, req: _Request) -> _Reply:
        """``/_sandbox/...``: fault injection and state for out-of-process tests."""
        if not _is_loopback(req.client) and not self._authorized(
            req.headers.get("authorization", "")
        ):
            return _Reply(401, {"id": str(uuid.uuid4()), "message": "unauthorized"})
        sub = req.path[len(CONTROL_PREFIX) :].rstrip("/")
        try:
            if sub == "/faults" and req.method == "GET":
                return _Reply(200, {"faults": self.faults.describe()})
            if sub == "/faults" and req.method == "DELETE":
                self.faults.clear()
                return _Reply(200, {"faults": self.faults.describe()})
            if sub == "/faults" and req.method == "POST":
                data = req.json()
                specs = data if isinstance(data, list) else [data]
                for spec in specs:
                    self.faults.apply(spec)
                return _Reply(200, {"faults": self.faults.describe()})
            if sub == "/state" and req.method == "GET":
                return _Reply(200, self.state_snapshot())
            if sub == "/requests" and req.method == "GET":
                with self._lock:
                    return _Reply(200, {"requests": [list(r) for r in self.requests]})
            if sub == "/requests" and req.method == "DELETE":
                self.clear_requests()
                return _Reply(200, {"requests": []})
        except ValueError as exc:
            return _Reply(400, {"id": str(uuid.uuid4()), "message": str(exc)})
        except EmulatorAPIError as err:
            return _error_reply(err)
        return _error_reply(_not_found(req.path))

    def _dispatch(self, req: _Request) -> _Reply:
        allowed: list[str] = []
        for method, pattern, handler in _ROUTES:
            match = pattern.match(req.path)
            if match is None:
                continue
            allowed.append(method)
            if method != req.method:
                continue
            args = [unquote(g) for g in match.groups()]
            result: _Reply = getattr(self, "_h_" + handler)(req, *args)
            return result
        if allowed:
            return _method_not_allowed(req.method, allowed)
        raise _not_found(req.path)

    # -- pagination ----------------------------------------------------------------------------

    @staticmethod
    def _cursor(kind: str, seq: int) -> str:
        return base64.urlsafe_b64encode(f"{kind}:{seq}".encode()).decode().rstrip("=")

    @staticmethod
    def _limit(req: _Request) -> int:
        values = req.query.get("limit")
        if not values:
            return DEFAULT_PAGE_LIMIT
        try:
            limit = int(values[-1])
        except ValueError:
            raise _bad_request("limit must be an integer") from None
        if limit < 1:
            raise _bad_request("limit must be at least 1")
        return min(limit, MAX_PAGE_LIMIT)

    @staticmethod
    def _page(
        req: _Request,
        kind: str,
        items: list[tuple[int, dict[str, Any]]],
        wrap: str,
        *,
        descending: bool = False,
    ) -> list[dict[str, Any]]:
        """Render's pagination: ``limit`` (1..100, default 20) items after ``cursor``."""
        limit = RenderEmulator._limit(req)
        cursor_values = req.query.get("cursor")
        if cursor_values and cursor_values[-1]:
            token = cursor_values[-1]
            try:
                decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
                cursor_kind, seq_text = decoded.split(":", 1)
                after = int(seq_text)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise _bad_request("invalid cursor") from None
            if cursor_kind != kind:
                raise _bad_request("invalid cursor")
            items = [it for it in items if (it[0] < after if descending else it[0] > after)]
        return [
            {"cursor": RenderEmulator._cursor(kind, seq), wrap: payload}
            for seq, payload in items[:limit]
        ]

    # -- owners --------------------------------------------------------------------------------

    def _h_list_owners(self, req: _Request) -> _Reply:
        names, emails = set(req.param("name")), set(req.param("email"))
        with self._lock:
            owners = sorted(self._owners.values(), key=lambda o: o.seq)
            items = [
                (o.seq, o.json())
                for o in owners
                if (not names or o.name in names) and (not emails or o.email in emails)
            ]
        return _Reply(200, self._page(req, "owner", items, "owner"))

    def _h_get_owner(self, req: _Request, owner_id: str) -> _Reply:
        with self._lock:
            owner = self._owners.get(owner_id)
            if owner is None:
                raise _not_found(owner_id)
            return _Reply(200, owner.json())

    # -- postgres ------------------------------------------------------------------------------

    def _get_pg(self, postgres_id: str) -> _Postgres:
        pg = self._postgres.get(postgres_id)
        if pg is None:
            raise _not_found(postgres_id)
        return pg

    def _pg_status(self, pg: _Postgres, now: float) -> str:
        if pg.suspended or pg.expired:
            return "suspended"
        if now < pg.updating_until:
            return "updating_instance"
        if not pg.provisioned:
            return "creating"
        if pg.held:
            if self.faults.never_available_enabled:
                return "creating"
            pg.held = False
            pg.ready_at = min(pg.ready_at, now)
        return "available" if now >= pg.ready_at else "creating"

    def _postgres_json(self, pg: _Postgres, now: float) -> dict[str, Any]:
        owner = self._owners.get(pg.owner_id)
        data: dict[str, Any] = {
            "createdAt": iso(pg.created),
            "dashboardUrl": f"https://dashboard.render.com/d/{pg.id}",
            "databaseName": pg.database_name,
            "databaseUser": pg.database_user,
            "diskAutoscalingEnabled": pg.disk_autoscaling,
            "diskSizeGB": pg.disk_size_gb,
        }
        if pg.environment_id:
            data["environmentId"] = pg.environment_id
        if pg.expires_at is not None:
            data["expiresAt"] = iso(pg.expires_at)
        data.update(
            {
                "highAvailabilityEnabled": pg.high_availability,
                "id": pg.id,
                # Render answers null for an empty allow list (see the recordings).
                "ipAllowList": [dict(x) for x in pg.ip_allow_list] or None,
                "name": pg.name,
                "owner": owner.json() if owner else {"id": pg.owner_id},
                "plan": pg.plan,
                "readReplicas": [],
                "region": pg.region,
                "role": "primary",
                "status": self._pg_status(pg, now),
                "suspended": "suspended" if pg.suspended or pg.expired else "not_suspended",
                "suspenders": (["user"] if pg.suspended else [])
                + (["billing"] if pg.expired else []),
                "updatedAt": iso(pg.updated),
                "version": pg.version,
            }
        )
        return data

    def _connection_info_json(self, pg: _Postgres) -> dict[str, str]:
        cred = f"{pg.database_user}:{pg.password}"
        cluster = self._cluster_of(pg)
        ext_host, port = cluster.host, cluster.port
        if self.internal_reachable:
            internal = cluster.socket_url(pg.database_name, pg.database_user, pg.password)
        else:
            internal = f"postgresql://{cred}@{pg.id}/{pg.database_name}"
        return {
            "externalConnectionString": f"postgresql://{cred}@{ext_host}:{port}/{pg.database_name}",
            "internalConnectionString": internal,
            "password": pg.password,
            # Render's own response shape (see the recordings): data handed to the API
            # client, never run by this project; the client treats it as a secret.
            "psqlCommand": (
                f"PGPASSWORD={pg.password} psql -h {ext_host} -p {port} "
                f"-U {pg.database_user} {pg.database_name}"
            ),
        }

    def _h_list_postgres(self, req: _Request) -> _Reply:
        names, owners = set(req.param("name")), set(req.param("ownerId"))
        regions, suspended = set(req.param("region")), set(req.param("suspended"))
        envs = set(req.param("environmentId"))
        created_before = self._time_param(req, "createdBefore")
        created_after = self._time_param(req, "createdAfter")
        now = self.now()
        with self._lock:
            items = []
            for pg in sorted(self._postgres.values(), key=lambda p: p.seq):
                state = "suspended" if pg.suspended or pg.expired else "not_suspended"
                if (
                    (names and pg.name not in names)
                    or (owners and pg.owner_id not in owners)
                    or (regions and pg.region not in regions)
                    or (suspended and state not in suspended)
                    or (envs and pg.environment_id not in envs)
                    or (created_before is not None and pg.created >= created_before)
                    or (created_after is not None and pg.created <= created_after)
                ):
                    continue
                items.append((pg.seq, self._postgres_json(pg, now)))
        return _Reply(200, self._page(req, "postgres", items, "postgres"))

    @staticmethod
    def _time_param(req: _Request, name: str) -> float | None:
        values = req.query.get(name)
        if not values:
            return None
        try:
            return datetime.fromisoformat(values[-1].replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise _bad_request(f"{name} must be an RFC 3339 date-time") from None

    def _h_create_postgres(self, req: _Request) -> _Reply:
        pg = self._create_postgres(req.obj())
        with self._lock:
            return _Reply(201, self._postgres_json(pg, self.now()))

    @staticmethod
    def _validate_allow_list(value: Any) -> list[dict[str, str]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise _bad_request("ipAllowList must be an array")
        entries = []
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("cidrBlock"), str):
                raise _bad_request("ipAllowList entries need a cidrBlock")
            try:
                ipaddress.ip_network(entry["cidrBlock"], strict=False)
            except ValueError:
                raise _bad_request(f"invalid cidrBlock {entry['cidrBlock']!r}") from None
            entries.append(
                {"cidrBlock": entry["cidrBlock"], "description": str(entry.get("description", ""))}
            )
        return entries

    def _validate_create(self, body: dict[str, Any]) -> None:
        missing = [k for k in ("name", "ownerId", "plan", "version") if body.get(k) in (None, "")]
        if missing:
            raise _bad_request(f"missing required field(s): {', '.join(missing)}")
        for key in ("name", "ownerId", "plan", "version"):
            if not isinstance(body[key], str):
                raise _bad_request(f"{key} must be a string")
        if body["plan"] not in POSTGRES_PLANS:
            raise _bad_request(f"invalid plan {body['plan']!r}")
        if body["plan"] in LEGACY_POSTGRES_PLANS:
            raise _bad_request(LEGACY_PLAN_MESSAGE.format(plan=body["plan"]))
        if body["version"] not in POSTGRES_VERSIONS:
            raise _bad_request(
                f"invalid version {body['version']!r}: must be one of "
                + ", ".join(POSTGRES_VERSIONS)
            )
        region = body.get("region", "oregon")
        if region not in REGIONS:
            raise _bad_request(f"invalid region {region!r}")
        for key in ("databaseName", "databaseUser"):
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or not _IDENT.match(value)):
                raise _bad_request(f"invalid {key} {value!r}: use letters, digits and underscores")
        disk = body.get("diskSizeGB")
        if disk is not None and (not isinstance(disk, int) or isinstance(disk, bool) or disk < 1):
            raise _bad_request("diskSizeGB must be a positive integer")
        for key in ("enableHighAvailability", "enableDiskAutoscaling"):
            if key in body and not isinstance(body[key], bool):
                raise _bad_request(f"{key} must be a boolean")

    def _create_postgres(self, body: dict[str, Any]) -> _Postgres:
        self._validate_create(body)
        self._cluster_for_version(body["version"])  # serve the major it reports, or refuse
        # omitted (or null): Render's default, open to everywhere; [] means no outside access
        given = body.get("ipAllowList")
        allow_list = [dict(EVERYWHERE)] if given is None else self._validate_allow_list(given)
        now = self.now()
        plan = body["plan"]
        with self._lock:
            owner_id = body["ownerId"]
            if owner_id not in self._owners:
                raise _not_found(owner_id)
            if plan == FREE_PLAN and (
                any(p.plan == FREE_PLAN and p.owner_id == owner_id for p in self._postgres.values())
                or self.faults._take_free_refusal(owner_id, now)
            ):
                raise _bad_request(FREE_TIER_LIMIT_MESSAGE)
            taken = {p.database_user for p in self._postgres.values()}
            user_base = _ident(body.get("databaseUser") or body["name"])
            db_base = _ident(body.get("databaseName") or body["name"])
            user = f"{user_base}_{_suffix()}"
            while user in taken:
                user = f"{user_base}_{_suffix()}"
            pg = _Postgres(
                id=new_id("dpg") + "-a",
                seq=self._next_seq(),
                name=body["name"],
                owner_id=owner_id,
                plan=plan,
                version=body["version"],
                region=body.get("region", "oregon"),
                database_name=f"{db_base}_{_suffix()}",
                database_user=user,
                password=_password(),
                created=now,
                updated=now,
                ready_at=now + self.provision_delay,
                held=self.faults.never_available_enabled,
                ip_allow_list=allow_list,
                disk_size_gb=body.get("diskSizeGB") or (1 if plan == FREE_PLAN else 15),
                high_availability=bool(body.get("enableHighAvailability", False)),
                disk_autoscaling=bool(body.get("enableDiskAutoscaling", False)),
                environment_id=body.get("environmentId"),
                expires_at=now + FREE_TIER_DAYS * 86400 if plan == FREE_PLAN else None,
            )
            # Reserve the record first so the one-free-database rule holds under concurrency.
            self._postgres[pg.id] = pg
        try:
            self._provision(pg)
            seed = self.faults._take_seed()
            if seed is not None:
                self._run_as_owner(pg, seed)
            self._apply_allow_list(pg)
        except Exception as exc:
            with self._lock:
                self._postgres.pop(pg.id, None)
            with contextlib.suppress(Exception):
                self._drop_database(pg)
                self._apply_allow_list(pg, dropped=True)
            log.error("provisioning %s failed: %s", pg.id, type(exc).__name__)
            raise EmulatorAPIError(500, "failed to provision the database") from exc
        with self._lock:  # the delay counts from when the database really exists
            pg.provisioned = True
            pg.ready_at = self.now() + self.provision_delay
        log.info("created %s (%s, plan %s)", pg.id, pg.name, pg.plan)
        return pg

    # -- real SQL on the cluster ---------------------------------------------------------------

    @contextlib.contextmanager
    def _admin(self, cluster: Cluster) -> Iterator[Any]:
        conn = psycopg2.connect(**PgURL.parse(cluster.admin_url).psycopg2_kwargs(10))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def _provision(self, pg: _Postgres) -> None:
        """A login role that is not a superuser, owning a fresh database, like Render's."""
        role, db = psql.Identifier(pg.database_user), psql.Identifier(pg.database_name)
        with self._admin(self._cluster_of(pg)) as cur:
            cur.execute(
                psql.SQL(
                    "CREATE ROLE {} LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS"
                ).format(role),
                (pg.password,),
            )
            cur.execute(psql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
            cur.execute(psql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))

    def _run_as_owner(self, pg: _Postgres, statements: str) -> None:
        """Run SQL in the database as its own (non-superuser) role."""
        conn = psycopg2.connect(
            host=self._cluster_of(pg).host,
            port=self._cluster_of(pg).port,
            dbname=pg.database_name,
            user=pg.database_user,
            password=pg.password,
            connect_timeout=10,
        )
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statements)
        finally:
            conn.close()

    def _terminate(self, cur: Any, pg: _Postgres) -> None:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE (datname = %s OR usename = %s) AND pid <> pg_backend_pid()",
            (pg.database_name, pg.database_user),
        )

    def _drop_database(self, pg: _Postgres) -> None:
        """End its sessions, drop the database and the role."""
        cluster = self._cluster_of(pg)
        with self._admin(cluster) as cur:
            if self._role_exists(cur, pg.database_user):  # no new sessions while we drop
                cur.execute(
                    psql.SQL("ALTER ROLE {} NOLOGIN").format(psql.Identifier(pg.database_user))
                )
            self._terminate(cur, pg)
            force = psql.SQL(" WITH (FORCE)") if cluster.major >= 13 else psql.SQL("")
            cur.execute(
                psql.SQL("DROP DATABASE IF EXISTS {}{}").format(
                    psql.Identifier(pg.database_name), force
                )
            )
            cur.execute(
                psql.SQL("DROP ROLE IF EXISTS {}").format(psql.Identifier(pg.database_user))
            )

    @staticmethod
    def _role_exists(cur: Any, name: str) -> bool:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        return cur.fetchone() is not None

    def _set_login(self, pg: _Postgres, allowed: bool) -> None:
        with self._admin(self._cluster_of(pg)) as cur:
            cur.execute(
                psql.SQL("ALTER ROLE {} {}").format(
                    psql.Identifier(pg.database_user),
                    psql.SQL("LOGIN" if allowed else "NOLOGIN"),
                )
            )
            if not allowed:
                self._terminate(cur, pg)

    # -- the IP allow list -------------------------------------------------------------------------

    def _admits_this_machine(self, pg: _Postgres) -> bool:
        """Whether `pg`'s allow list admits connections from this machine (they come from the
        address of the external URL). Empty admits no one from outside Render."""
        here = ipaddress.ip_address(self._cluster_of(pg).host)
        for entry in pg.ip_allow_list:
            net = ipaddress.ip_network(entry["cidrBlock"], strict=False)
            if net.version == here.version and here in net:
                return True
        return False

    def _apply_allow_list(self, pg: _Postgres, *, dropped: bool = False) -> None:
        """Make the server refuse `pg`'s role over TCP, the external URL's way in, while its
        allow list shuts this machine out (a ``reject`` line in pg_hba.conf), and admit it
        again when the list allows it. The internal URL (the Unix socket, the sandbox's
        private network) is not affected, as on Render."""
        shut = not dropped and not self._admits_this_machine(pg)
        cluster = self._cluster_of(pg)
        key = str(cluster.data_dir)
        with self._lock:
            users = self._shut_out.setdefault(key, (cluster, set()))[1]
            if (pg.database_user in users) == shut:
                return
            if shut:
                users.add(pg.database_user)
            else:
                users.discard(pg.database_user)
            listed = sorted(users)
        self._write_hba(cluster, listed)
        if not dropped:
            self._await_hba(pg, shut)

    def _write_hba(self, cluster: Cluster, users: list[str]) -> None:
        """Rewrite this emulator's block at the top of pg_hba.conf and reload the server."""
        path = cluster.data_dir / "pg_hba.conf"
        begin, end = f"# {self._hba_tag} begin", f"# {self._hba_tag} end"
        with _HBA_LOCK:
            text = path.read_text()
            if begin in text:
                head, _, rest = text.partition(begin)
                text = head + rest.partition(end + "\n")[2]
            block = [begin, *(f'host all "{user}" all reject' for user in users), end]
            path.write_text("\n".join(block) + "\n" + text if users else text)
            with self._admin(cluster) as cur:
                cur.execute("SELECT pg_reload_conf()")

    def _await_hba(self, pg: _Postgres, shut: bool, timeout: float = 10.0) -> None:
        """A reload takes effect a moment later: poll until a login shows the new rule."""
        cluster = self._cluster_of(pg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = psycopg2.connect(
                    host=cluster.host,
                    port=cluster.port,
                    dbname=pg.database_name,
                    user=pg.database_user,
                    password=pg.password,
                    sslmode="require",
                    connect_timeout=5,
                )
            except psycopg2.OperationalError as exc:
                rejected = "pg_hba.conf rejects" in str(exc)
            else:
                conn.close()
                rejected = False
            if rejected == shut:
                return
            time.sleep(0.02)
        raise EmulatorAPIError(500, "the allow list did not take effect")

    # -- postgres handlers ---------------------------------------------------------------------

    def _h_get_postgres(self, req: _Request, postgres_id: str) -> _Reply:
        with self._lock:
            return _Reply(200, self._postgres_json(self._get_pg(postgres_id), self.now()))

    def _h_update_postgres(self, req: _Request, postgres_id: str) -> _Reply:
        body = req.obj()
        with self._lock:
            pg = self._get_pg(postgres_id)
            if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
                raise _bad_request("name must be a non-empty string")
            if "plan" in body:
                plan = body["plan"]
                if plan not in POSTGRES_PLANS:
                    raise _bad_request(f"invalid plan {plan!r}")
                if plan in LEGACY_POSTGRES_PLANS and plan != pg.plan:
                    raise _bad_request(LEGACY_PLAN_MESSAGE.format(plan=plan))
                if plan == FREE_PLAN and pg.plan != FREE_PLAN:
                    raise _bad_request("a paid database cannot be changed to the free plan")
            allow_list = (
                self._validate_allow_list(body["ipAllowList"]) if "ipAllowList" in body else None
            )
            disk = body.get("diskSizeGB")
            if disk is not None and (not isinstance(disk, int) or disk < (pg.disk_size_gb or 1)):
                raise _bad_request("diskSizeGB must be an integer no smaller than the current size")
            if "name" in body:
                pg.name = body["name"]
            regained = False
            if "plan" in body and body["plan"] != pg.plan:
                pg.plan = body["plan"]
                pg.updating_until = self.now() + self.provision_delay
                if pg.plan != FREE_PLAN:
                    # a paid plan never expires; an expired database is reachable again
                    pg.expires_at = None
                    regained, pg.expired = pg.expired, False
            if allow_list is not None:
                pg.ip_allow_list = allow_list
            if disk is not None:
                pg.disk_size_gb = disk
            if isinstance(body.get("enableHighAvailability"), bool):
                pg.high_availability = body["enableHighAvailability"]
            if isinstance(body.get("enableDiskAutoscaling"), bool):
                pg.disk_autoscaling = body["enableDiskAutoscaling"]
            pg.updated = self.now()
            reply = _Reply(200, self._postgres_json(pg, pg.updated))
        if regained and not pg.suspended:
            self._set_login(pg, True)
        if allow_list is not None:
            self._apply_allow_list(pg)
        return reply

    def _delete_postgres(self, postgres_id: str) -> None:
        with self._lock:
            pg = self._get_pg(postgres_id)
            del self._postgres[postgres_id]
        if pg.plan == FREE_PLAN:
            self.faults._free_deleted(pg.owner_id, self.now())
        self._drop_database(pg)
        self._apply_allow_list(pg, dropped=True)
        log.info("deleted %s (%s)", pg.id, pg.name)

    def _h_delete_postgres(self, req: _Request, postgres_id: str) -> _Reply:
        self._delete_postgres(postgres_id)
        return _Reply(204)

    def _h_connection_info(self, req: _Request, postgres_id: str) -> _Reply:
        with self._lock:
            return _Reply(200, self._connection_info_json(self._get_pg(postgres_id)))

    def _h_suspend_postgres(self, req: _Request, postgres_id: str) -> _Reply:
        with self._lock:
            pg = self._get_pg(postgres_id)
        self._set_login(pg, False)
        with self._lock:
            pg.suspended = True
            pg.updated = self.now()
        return _Reply(202, empty=True)

    def _h_resume_postgres(self, req: _Request, postgres_id: str) -> _Reply:
        with self._lock:
            pg = self._get_pg(postgres_id)
        if not pg.expired:  # only an upgrade brings an expired database back
            self._set_login(pg, True)
        with self._lock:
            pg.suspended = False
            pg.updated = self.now()
        return _Reply(202, empty=True)

    # -- services ------------------------------------------------------------------------------

    def _get_svc(self, service_id: str) -> _Service:
        svc = self._services.get(service_id)
        if svc is None:
            raise _not_found(service_id)
        return svc

    @staticmethod
    def _details_for_type(svc: _Service, details: dict[str, Any]) -> dict[str, Any]:
        """Trim web-service details to what Render shows for the service's type: only web
        services have maintenance mode; workers and cron jobs open no ports; cron jobs have a
        schedule; static sites have no runtime at all."""
        if svc.type == "web_service":
            return details
        details.pop("maintenanceMode", None)
        details.pop("healthCheckPath", None)
        if svc.type in ("background_worker", "cron_job"):
            details.pop("openPorts", None)
            details.pop("url", None)
        if svc.type == "cron_job":
            details["schedule"] = "0 * * * *"
            details.pop("numInstances", None)
        if svc.type == "static_site":
            return {
                "buildCommand": "npm run build",
                "publishPath": "dist",
                "previews": details["previews"],
                "pullRequestPreviewsEnabled": "no",
                "url": details.get("url", ""),
            }
        return details

    def _service_json(self, svc: _Service) -> dict[str, Any]:
        git = svc.repo is not None
        details: dict[str, Any] = {
            "buildPlan": "starter",
            "env": "python" if git else "image",
            "envSpecificDetails": (
                {
                    "buildCommand": "pip install -r requirements.txt",
                    "startCommand": "gunicorn app:app",
                }
                if git
                else {"dockerCommand": "", "dockerContext": "", "dockerfilePath": ""}
            ),
            "healthCheckPath": svc.health_check_path,
            "maintenanceMode": dict(svc.maintenance),
            "numInstances": 1,
            "openPorts": [{"port": 10000, "protocol": "TCP"}],
            "plan": svc.plan,
            "previews": {"generation": "off"},
            "pullRequestPreviewsEnabled": "no",
            "region": svc.region,
            "runtime": "python" if git else "image",
            "sshAddress": f"{svc.id}@ssh.{svc.region}.render.com",
            "url": f"https://{svc.slug}.onrender.com",
        }
        details = self._details_for_type(svc, details)
        data: dict[str, Any] = {
            "autoDeploy": svc.auto_deploy,
            "createdAt": iso(svc.created),
            "dashboardUrl": f"https://dashboard.render.com/{_DASHBOARD_KIND[svc.type]}/{svc.id}",
            "id": svc.id,
        }
        if git:
            data["branch"] = svc.branch
        else:
            data["imagePath"] = svc.image_path
        data.update({"name": svc.name, "notifyOnFail": "default", "ownerId": svc.owner_id})
        if git:
            data["repo"] = svc.repo
        data.update(
            {
                "rootDir": "",
                "serviceDetails": details,
                "slug": svc.slug,
                "suspended": "suspended" if svc.suspended else "not_suspended",
                "suspenders": ["user"] if svc.suspended else [],
                "type": svc.type,
                "updatedAt": iso(svc.updated),
            }
        )
        if svc.environment_id:
            data["environmentId"] = svc.environment_id
        return data

    def _h_list_services(self, req: _Request) -> _Reply:
        names, owners = set(req.param("name")), set(req.param("ownerId"))
        types, suspended = set(req.param("type")), set(req.param("suspended"))
        regions = set(req.param("region"))
        with self._lock:
            items = []
            for svc in sorted(self._services.values(), key=lambda s: s.seq):
                state = "suspended" if svc.suspended else "not_suspended"
                if (
                    (names and svc.name not in names)
                    or (owners and svc.owner_id not in owners)
                    or (types and svc.type not in types)
                    or (suspended and state not in suspended)
                    or (regions and svc.region not in regions)
                ):
                    continue
                items.append((svc.seq, self._service_json(svc)))
        return _Reply(200, self._page(req, "service", items, "service"))

    def _h_get_service(self, req: _Request, service_id: str) -> _Reply:
        with self._lock:
            return _Reply(200, self._service_json(self._get_svc(service_id)))

    def _h_update_service(self, req: _Request, service_id: str) -> _Reply:
        body = req.obj()
        with self._lock:
            svc = self._get_svc(service_id)
            details = body.get("serviceDetails")
            if details is not None and not isinstance(details, dict):
                raise _bad_request("serviceDetails must be an object")
            details = details or {}
            mode = details.get("maintenanceMode")
            if mode is not None:
                if not isinstance(mode, dict) or not isinstance(mode.get("enabled"), bool):
                    raise _bad_request("maintenanceMode.enabled must be a boolean")
                if not isinstance(mode.get("uri", ""), str):
                    raise _bad_request("maintenanceMode.uri must be a string")
            if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
                raise _bad_request("name must be a non-empty string")
            if "autoDeploy" in body and body["autoDeploy"] not in ("yes", "no"):
                raise _bad_request("autoDeploy must be 'yes' or 'no'")
            if mode is not None and svc.type != "web_service":
                raise _bad_request(MAINTENANCE_ONLY_WEB_MESSAGE)
            if mode is not None:
                svc.maintenance = {"enabled": mode["enabled"], "uri": mode.get("uri", "")}
            if "name" in body:
                svc.name = body["name"]
            if "autoDeploy" in body:
                svc.auto_deploy = body["autoDeploy"]
            if isinstance(details.get("healthCheckPath"), str):
                svc.health_check_path = details["healthCheckPath"]
            if isinstance(details.get("plan"), str):
                svc.plan = details["plan"]
            svc.updated = time.time()
            return _Reply(200, self._service_json(svc))

    def _h_suspend_service(self, req: _Request, service_id: str) -> _Reply:
        with self._lock:
            svc = self._get_svc(service_id)
            svc.suspended = True
            svc.updated = time.time()
        return _Reply(202, empty=True)

    def _h_resume_service(self, req: _Request, service_id: str) -> _Reply:
        with self._lock:
            svc = self._get_svc(service_id)
            svc.suspended = False
            svc.updated = time.time()
        return _Reply(202, empty=True)

    # -- service env vars ----------------------------------------------------------------------

    @staticmethod
    def _env_value(body: Any, *, key_required: bool) -> tuple[str | None, str]:
        """(key, value) from ``{"key", "value"}`` or ``{"key", "generateValue": true}``."""
        if not isinstance(body, dict):
            raise _bad_request("each env var must be a JSON object")
        key = body.get("key")
        if key_required and (not isinstance(key, str) or not key):
            raise _bad_request("env var key is required")
        if isinstance(body.get("value"), str):
            return key, body["value"]
        if body.get("generateValue") is True:
            return key, base64.b64encode(secrets.token_bytes(32)).decode()
        raise _bad_request("env var needs a string value or generateValue: true")

    def _h_list_env_vars(self, req: _Request, service_id: str) -> _Reply:
        with self._lock:
            svc = self._get_svc(service_id)
            items = [
                (v.seq, {"key": v.key, "value": v.value})
                for v in sorted(svc.env_vars.values(), key=lambda v: v.seq)
            ]
        page = self._page(req, "envVar", items, "envVar")
        return _Reply(200, [{"envVar": p["envVar"], "cursor": p["cursor"]} for p in page])

    def _h_replace_env_vars(self, req: _Request, service_id: str) -> _Reply:
        data = req.json()
        if data is not None and not isinstance(data, list):
            raise _bad_request("request body must be an array of env vars")
        pairs = [self._env_value(item, key_required=True) for item in data or []]
        with self._lock:
            svc = self._get_svc(service_id)
            svc.env_vars = {}
            for key, value in pairs:
                assert key is not None
                svc.env_vars[key] = _EnvVar(key, value, self._next_seq())
            svc.updated = time.time()
            out = [
                {
                    "envVar": {"key": v.key, "value": v.value},
                    "cursor": self._cursor("envVar", v.seq),
                }
                for v in svc.env_vars.values()
            ]
        return _Reply(200, out)

    def _h_get_env_var(self, req: _Request, service_id: str, key: str) -> _Reply:
        with self._lock:
            var = self._get_svc(service_id).env_vars.get(key)
            if var is None:
                raise _not_found(key)
            return _Reply(200, {"key": var.key, "value": var.value})

    def _h_put_env_var(self, req: _Request, service_id: str, key: str) -> _Reply:
        _, value = self._env_value(req.obj(), key_required=False)
        with self._lock:
            svc = self._get_svc(service_id)
            var = svc.env_vars.get(key)
            if var is None:
                svc.env_vars[key] = var = _EnvVar(key, value, self._next_seq())
            else:
                var.value = value
            svc.updated = time.time()
            return _Reply(200, {"key": var.key, "value": var.value})

    def _h_delete_env_var(self, req: _Request, service_id: str, key: str) -> _Reply:
        with self._lock:
            svc = self._get_svc(service_id)
            if svc.env_vars.pop(key, None) is None:
                raise _not_found(key)
            svc.updated = time.time()
        return _Reply(204)

    # -- deploys -------------------------------------------------------------------------------

    def _new_deploy(
        self,
        svc: _Service,
        created: float,
        duration: float,
        outcome: str,
        trigger: str,
        commit_id: str | None,
        queued_for: float = 0.0,
        reuse: _Deploy | None = None,
    ) -> _Deploy:
        """A deploy record; with `reuse` (deploy_only) it ships that deploy's build again."""
        git = svc.repo is not None
        commit = image = None
        if reuse is not None:
            commit = dict(reuse.commit) if reuse.commit else None
            image = dict(reuse.image) if reuse.image else None
        elif git:
            commit = {
                "id": commit_id or secrets.token_hex(20),
                "message": "Update app",
                "createdAt": iso(created - 60),
            }
        else:
            image = {
                "ref": svc.image_path or DEFAULT_IMAGE,
                "sha": "sha256:" + secrets.token_hex(32),
            }
        return _Deploy(
            id=new_id("dep"),
            seq=self._next_seq(),
            service_id=svc.id,
            created=created,
            duration=duration,
            outcome=outcome,
            trigger=trigger,
            git=git,
            commit=commit,
            image=image,
            queued_for=queued_for,
            built=reuse is None,
        )

    @staticmethod
    def _last_build(svc: _Service) -> _Deploy | None:
        """The newest deploy whose build succeeded: what ``deploy_only`` ships again."""
        for d in reversed(svc.deploys):
            if d.outcome in _BUILT_OUTCOMES:
                return d
        return None

    @staticmethod
    def _deploy_timeline(d: _Deploy) -> list[tuple[float, str]]:
        """When each status starts: queued, created, build, update, then the outcome."""
        t0, span = d.created + d.queued_for, d.duration
        steps: list[tuple[float, str]] = []
        if d.queued_for:
            steps.append((d.created, "queued"))
        if d.git and d.built:
            steps.append((t0, "created"))
            steps.append((t0 + 0.2 * span, "build_in_progress"))
            if d.outcome != "build_failed":
                steps.append((t0 + 0.6 * span, "update_in_progress"))
        else:
            steps.append((t0, "update_in_progress"))
        steps.append((t0 + span, d.outcome))
        return steps

    def _deploy_json(self, svc: _Service, d: _Deploy, now: float) -> dict[str, Any]:
        timeline = self._deploy_timeline(d)
        status, changed = timeline[0][1], d.created
        for start, name in timeline:
            if now >= start:
                status, changed = name, start
        finished_at = timeline[-1][0] if now >= timeline[-1][0] else None
        if status == "live":
            for later in svc.deploys:
                if later.seq > d.seq and later.outcome == "live":
                    went_live = self._deploy_timeline(later)[-1][0]
                    if now >= went_live:
                        status, changed = "deactivated", went_live
                        break
        data: dict[str, Any] = {"id": d.id, "commit": d.commit}
        if d.image is not None:
            data["image"] = dict(d.image)
        data.update(
            {
                "status": status,
                "trigger": d.trigger,
                "createdAt": iso(d.created),
                "updatedAt": iso(changed),
                "finishedAt": iso(finished_at) if finished_at is not None else None,
            }
        )
        return data

    def _h_list_deploys(self, req: _Request, service_id: str) -> _Reply:
        statuses = set(req.param("status"))
        now = time.time()
        with self._lock:
            svc = self._get_svc(service_id)
            items = []
            for d in reversed(svc.deploys):
                data = self._deploy_json(svc, d, now)
                if statuses and data["status"] not in statuses:
                    continue
                items.append((d.seq, data))
        page = self._page(req, "deploy", items, "deploy", descending=True)
        return _Reply(200, [{"deploy": p["deploy"], "cursor": p["cursor"]} for p in page])

    def _h_create_deploy(self, req: _Request, service_id: str) -> _Reply:
        body = req.obj(required=False)
        with self._lock:
            self._get_svc(service_id).deploy_requests.append(dict(body))
        if body.get("clearCache", "do_not_clear") not in ("clear", "do_not_clear"):
            raise _bad_request("clearCache must be 'clear' or 'do_not_clear'")
        commit_id = body.get("commitId")
        if commit_id is not None and not isinstance(commit_id, str):
            raise _bad_request("commitId must be a string")
        mode = body.get("deployMode", "build_and_deploy")
        if mode not in DEPLOY_MODES:
            raise _bad_request(f"deployMode must be one of {', '.join(DEPLOY_MODES)}")
        deploy_only = mode == "deploy_only"
        if deploy_only and any(k in body for k in ("commitId", "imageUrl", "clearCache")):
            raise _bad_request(DEPLOY_ONLY_CONFLICT_MESSAGE)
        now = time.time()
        with self._lock:
            svc = self._get_svc(service_id)
            reuse = self._last_build(svc) if deploy_only else None
            if deploy_only and reuse is None:
                raise _bad_request(DEPLOY_ONLY_NO_BUILD_MESSAGE)
            failure = self.faults._take_deploy_failure(service_id)
            queued = self.faults._take_queue()
            deploy = self._new_deploy(
                svc,
                now,
                self.deploy_delay,
                failure or "live",
                "api",
                commit_id,
                queued_for=max(self.deploy_delay / 2, 0.05) if queued else 0.0,
                reuse=reuse,
            )
            svc.deploys.append(deploy)
            if queued:
                return _Reply(202, empty=True)
            return _Reply(201, self._deploy_json(svc, deploy, now))

    def _h_get_deploy(self, req: _Request, service_id: str, deploy_id: str) -> _Reply:
        with self._lock:
            svc = self._get_svc(service_id)
            for d in svc.deploys:
                if d.id == deploy_id:
                    return _Reply(200, self._deploy_json(svc, d, time.time()))
        raise _not_found(deploy_id)

    # -- env groups ----------------------------------------------------------------------------

    def _get_group(self, group_id: str) -> _EnvGroup:
        group = self._env_groups.get(group_id)
        if group is None:
            raise _not_found(group_id)
        return group

    def _env_group_json(self, group: _EnvGroup) -> dict[str, Any]:
        links = []
        for sid in group.service_ids:
            svc = self._services.get(sid)
            if svc is not None:
                links.append({"id": svc.id, "name": svc.name, "type": "web"})
        data: dict[str, Any] = {
            "createdAt": iso(group.created),
            "envVars": [{"key": v.key, "value": v.value} for v in group.env_vars],
            "id": group.id,
            "name": group.name,
            "ownerId": group.owner_id,
            "secretFiles": [],
            "serviceLinks": links,
            "updatedAt": iso(group.updated),
        }
        if group.environment_id:
            data["environmentId"] = group.environment_id
        return data

    def _h_list_env_groups(self, req: _Request) -> _Reply:
        names, owners = set(req.param("name")), set(req.param("ownerId"))
        with self._lock:
            items = []
            for g in sorted(self._env_groups.values(), key=lambda g: g.seq):
                if (names and g.name not in names) or (owners and g.owner_id not in owners):
                    continue
                meta = self._env_group_json(g)
                del meta["envVars"], meta["secretFiles"]
                items.append((g.seq, meta))
        # The spec lists bare envGroupMeta items (no cursor wrapper); the cursor is an id.
        cursor = (req.query.get("cursor") or [""])[-1]
        if cursor:
            ids = [item["id"] for _, item in items]
            if cursor not in ids:
                raise _bad_request("invalid cursor")
            items = items[ids.index(cursor) + 1 :]
        limit = self._limit(req)
        return _Reply(200, [item for _, item in items[:limit]])

    def _h_get_env_group(self, req: _Request, group_id: str) -> _Reply:
        with self._lock:
            return _Reply(200, self._env_group_json(self._get_group(group_id)))

    def _h_update_env_group(self, req: _Request, group_id: str) -> _Reply:
        body = req.obj()
        with self._lock:
            group = self._get_group(group_id)
            if "name" in body:
                if not isinstance(body["name"], str) or not body["name"]:
                    raise _bad_request("name must be a non-empty string")
                group.name = body["name"]
                group.updated = time.time()
            return _Reply(200, self._env_group_json(group))

    def _h_get_env_group_var(self, req: _Request, group_id: str, key: str) -> _Reply:
        with self._lock:
            for var in self._get_group(group_id).env_vars:
                if var.key == key:
                    return _Reply(200, {"key": var.key, "value": var.value})
        raise _not_found(key)

    def _h_put_env_group_var(self, req: _Request, group_id: str, key: str) -> _Reply:
        _, value = self._env_value(req.obj(), key_required=False)
        with self._lock:
            group = self._get_group(group_id)
            for var in group.env_vars:
                if var.key == key:
                    var.value = value
                    break
            else:  # a new key is listed first, as in the recordings
                group.env_vars.insert(0, _EnvVar(key, value, self._next_seq()))
            group.updated = time.time()
            return _Reply(200, self._env_group_json(group))

    def _h_delete_env_group_var(self, req: _Request, group_id: str, key: str) -> _Reply:
        with self._lock:
            group = self._get_group(group_id)
            kept = [v for v in group.env_vars if v.key != key]
            if len(kept) == len(group.env_vars):
                raise _not_found(key)
            group.env_vars = kept
            group.updated = time.time()
        return _Reply(204)

    # -- blueprints ----------------------------------------------------------------------------

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
        blueprint = _Blueprint(
            new_id("exs"), self._next_seq(), name, owner, repo, branch, path, auto_sync,
            time.time(),
        )  # fmt: skip
        with self._lock:
            self._blueprints[blueprint.id] = blueprint
        for resource_id in manages:
            self.manage_with_blueprint(blueprint.id, resource_id)
        return blueprint.id

    def manage_with_blueprint(self, blueprint_id: str, resource_id: str) -> None:
        """Mark a database, service or env group as managed by this Blueprint."""
        with self._lock:
            blueprint = self._blueprints[blueprint_id]
            if self._resource(resource_id) is None:
                raise ValueError(f"unknown resource {resource_id!r}")
            if resource_id not in blueprint.resource_ids:
                blueprint.resource_ids.append(resource_id)

    def _resource(self, resource_id: str) -> dict[str, str] | None:
        """``{"id", "name", "type"}`` as a Blueprint lists it; None once deleted."""
        if resource_id in self._postgres:
            return {"id": resource_id, "name": self._postgres[resource_id].name,
                    "type": "postgres"}  # fmt: skip
        if resource_id in self._services:
            svc = self._services[resource_id]
            return {"id": resource_id, "name": svc.name, "type": svc.type}
        if resource_id in self._env_groups:
            return {"id": resource_id, "name": self._env_groups[resource_id].name,
                    "type": "environment_group"}  # fmt: skip
        return None

    def _blueprint_json(self, blueprint: _Blueprint, *, resources: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": blueprint.id,
            "name": blueprint.name,
            "status": "in_sync",
            "autoSync": blueprint.auto_sync,
            "repo": blueprint.repo,
            "branch": blueprint.branch,
            "path": blueprint.path,
            "lastSync": iso(blueprint.created),
        }
        if resources:
            found = (self._resource(rid) for rid in blueprint.resource_ids)
            data["resources"] = [r for r in found if r is not None]
        return data

    def _h_list_blueprints(self, req: _Request) -> _Reply:
        owners = set(req.param("ownerId"))
        with self._lock:
            items = [
                (b.seq, self._blueprint_json(b, resources=False))
                for b in sorted(self._blueprints.values(), key=lambda b: b.seq)
                if not owners or b.owner_id in owners
            ]
        return _Reply(200, self._page(req, "blueprint", items, "blueprint"))

    def _h_get_blueprint(self, req: _Request, blueprint_id: str) -> _Reply:
        with self._lock:
            blueprint = self._blueprints.get(blueprint_id)
            if blueprint is None:
                raise _not_found(blueprint_id)
            return _Reply(200, self._blueprint_json(blueprint, resources=True))


def expires_in(days: float) -> datetime:
    """``now + days`` as an aware datetime, for `RenderEmulator.set_expires_at`."""
    return datetime.now(UTC) + timedelta(days=days)
