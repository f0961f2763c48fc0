"""Render's HTTP conventions, apart from any server: requests and replies, errors, routing,
pagination, rate-limit counting and request ids.

Handlers take a `Request` and return a `Reply` (or raise `EmulatorAPIError`); `Router` picks the
handler by method and path, answering 405 with ``Allow`` for a known path and 404 otherwise.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from render_rotator.sandbox.emulator.records import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    SUFFIX_ALPHABET,
)

# Render's rate-limit buckets as seen in the recordings: limit per window, per kind of call.
RATE_BUCKETS = {"read": 400, "write": 100, "create": 20, "deploy": 10}
RATE_WINDOW = 60.0
SECURITY_HEADERS = (
    ("Referrer-Policy", "same-origin"),
    ("Vary", "Origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("X-Xss-Protection", "1; mode=block"),
)


class EmulatorAPIError(Exception):
    """An error answer of the emulator; raised by its Python API too (status + Render body)."""

    def __init__(self, status: int, message: str, *, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body if body is not None else {"id": str(uuid.uuid4()), "message": message}


def not_found(what: str) -> EmulatorAPIError:
    return EmulatorAPIError(404, f"not found: {what}", body={"message": f"not found: {what}"})


def found[K, V](records: Mapping[K, V], key: K) -> V:
    """The record stored under `key`, or Render's 404 naming it."""
    record = records.get(key)
    if record is None:
        raise not_found(str(key))
    return record


def bad_request(message: str) -> EmulatorAPIError:
    return EmulatorAPIError(400, message)


@dataclass
class Request:
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
            raise bad_request("invalid JSON in request body") from None

    def obj(self, *, required: bool = True) -> dict[str, Any]:
        data = self.json()
        if data is None and not required:
            return {}
        if not isinstance(data, dict):
            raise bad_request("request body must be a JSON object")
        return data

    def param(self, name: str) -> list[str]:
        """A query parameter's values: repeated and comma-separated forms both count."""
        values: list[str] = []
        for raw in self.query.get(name, []):
            values.extend(v for v in raw.split(",") if v)
        return values


@dataclass
class Reply:
    status: int
    body: Any = None
    empty: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False

    def payload(self) -> bytes:
        if self.empty or self.status == 204:
            return b""
        return json.dumps(self.body, separators=(",", ":")).encode()


def error_reply(err: EmulatorAPIError) -> Reply:
    return Reply(err.status, err.body)


def method_not_allowed(method: str, allowed: Iterable[str]) -> Reply:
    """405 in Render's error shape, with the ``Allow`` header HTTP asks for."""
    methods = sorted(set(allowed))
    reply = Reply(
        405, {"id": str(uuid.uuid4()), "message": f"method {method} not allowed on this path"}
    )
    reply.headers.append(("Allow", ", ".join(methods)))
    return reply


_REQUEST_POD = "emulator-" + "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(5))


def request_id(seq: int) -> str:
    """A ``Render-Request-Id`` shaped like Render's ``api-<pod>/<token>-<n>``."""
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))
    return f"api-{_REQUEST_POD}/{token}-{seq}"


class RateLimiter:
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


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


# -- pagination --------------------------------------------------------------------------------


def cursor(kind: str, seq: int) -> str:
    """An opaque cursor naming the item after which the next page starts."""
    return base64.urlsafe_b64encode(f"{kind}:{seq}".encode()).decode().rstrip("=")


def page_limit(req: Request) -> int:
    """``limit``: 1..100, default 20, as Render's list calls take it."""
    values = req.query.get("limit")
    if not values:
        return DEFAULT_PAGE_LIMIT
    try:
        limit = int(values[-1])
    except ValueError:
        raise bad_request("limit must be an integer") from None
    if limit < 1:
        raise bad_request("limit must be at least 1")
    return min(limit, MAX_PAGE_LIMIT)


def page(
    req: Request,
    kind: str,
    items: list[tuple[int, dict[str, Any]]],
    wrap: str,
    *,
    descending: bool = False,
) -> list[dict[str, Any]]:
    """Render's pagination: ``limit`` items after ``cursor``, each ``{"cursor", wrap: item}``."""
    limit = page_limit(req)
    cursor_values = req.query.get("cursor")
    if cursor_values and cursor_values[-1]:
        token = cursor_values[-1]
        try:
            decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            cursor_kind, seq_text = decoded.split(":", 1)
            after = int(seq_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise bad_request("invalid cursor") from None
        if cursor_kind != kind:
            raise bad_request("invalid cursor")
        items = [it for it in items if (it[0] < after if descending else it[0] > after)]
    return [{"cursor": cursor(kind, seq), wrap: payload} for seq, payload in items[:limit]]


def time_param(req: Request, name: str) -> float | None:
    """An RFC 3339 query parameter (``createdBefore``...) as epoch seconds."""
    values = req.query.get(name)
    if not values:
        return None
    try:
        return datetime.fromisoformat(values[-1].replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise bad_request(f"{name} must be an RFC 3339 date-time") from None


# -- routing -----------------------------------------------------------------------------------

Handler = Callable[..., Reply]
SEG = r"([^/]+)"


@dataclass(frozen=True)
class Route:
    """``method`` on paths matching ``pattern`` goes to ``handler(req, *path_segments)``."""

    method: str
    pattern: str
    handler: Handler


class Router:
    """Picks a handler by method and path (already %-decoded by the WSGI server); 405 with
    ``Allow`` for a known path, else 404."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [(r, re.compile(r.pattern + "$")) for r in routes]

    def dispatch(self, req: Request) -> Reply:
        allowed: list[str] = []
        for route, regex in self._routes:
            match = regex.match(req.path)
            if match is None:
                continue
            allowed.append(route.method)
            if route.method == req.method:
                return route.handler(req, *match.groups())
        if allowed:
            return method_not_allowed(req.method, allowed)
        raise not_found(req.path)
