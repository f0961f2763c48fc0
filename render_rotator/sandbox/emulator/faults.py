"""Fault injection: failures armed at runtime, so retries, waits and rollbacks are tested for real.

`Faults` is what tests (or the ``/_sandbox/faults`` control endpoint) arm; the emulator asks it,
per request, whether to answer with a fault (`take_rule`, `take_flaky`), how long to delay
(`latency_for`), and per action whether a deploy fails, a database stays ``creating`` or a free
slot is refused. `fault_reply` turns an armed request fault into Render's answer.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from render_rotator.sandbox.emulator.http import Reply
from render_rotator.sandbox.emulator.records import API_PREFIX, DEPLOY_FAILURE_STATUSES


@dataclass
class Rule:
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
            "retry_after": (
                self.retry_after
                if self.kind == "rate_limit" or (self.kind == "server_error" and self.retry_after)
                else None
            ),
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
        self._rules: list[Rule] = []
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
            Rule("rate_limit", _count(n), 429, float(retry_after), _norm_prefix(path_prefix),
                  _norm_method(method))
        )  # fmt: skip

    def server_error(
        self,
        n: int | None = 1,
        status: int = 503,
        path_prefix: str | None = None,
        method: str | None = None,
        after_processing: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """The next `n` matching requests get `status` (5xx). With ``after_processing`` the
        request is carried out first and only the answer is lost (tests idempotent retries).
        `retry_after` is sent as ``Retry-After`` (Render's edge may send one on a 503); without
        it the client backs off on its own, 1 s doubling."""
        if not 500 <= int(status) <= 599:
            raise ValueError("status must be a 5xx code")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        self._add(
            Rule("server_error", _count(n), int(status), float(retry_after or 0.0),
                  _norm_prefix(path_prefix), _norm_method(method), bool(after_processing))
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
            Rule("client_error", _count(n), int(status), 0.0, _norm_prefix(path_prefix),
                  _norm_method(method), message=str(message))
        )  # fmt: skip

    def drop_connection(
        self, n: int | None = 1, path_prefix: str | None = None, method: str | None = None
    ) -> None:
        """The next `n` matching requests get no answer: the connection is closed."""
        self._add(
            Rule("drop_connection", _count(n), 0, 0.0, _norm_prefix(path_prefix),
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

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def take_flaky(self, method: str, path: str) -> Rule | None:
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
                return Rule(
                    kind,
                    None,
                    status,
                    flaky.retry_after or 0.0,
                    after_processing=flaky.after_processing and status != 429,
                )
        return None

    def take_hooks(self, method: str, path: str) -> list[Callable[[str, str], None]]:
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

    def take_seed(self) -> str | None:
        with self._lock:
            for seed in self._seeds:
                if seed.remaining is not None:
                    seed.remaining -= 1
                    if seed.remaining <= 0:
                        self._seeds.remove(seed)
                return seed.sql
        return None

    def latency_for(self, method: str, path: str) -> float:
        with self._lock:
            return sum(
                x.seconds
                for x in self._latency
                if (not x.method or x.method == method)
                and (not x.path_prefix or path.startswith(x.path_prefix))
            )

    def take_deploy_failure(self, service_id: str) -> str | None:
        with self._lock:
            for failure in self._deploy_failures:
                if failure.service_id in (None, service_id):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._deploy_failures.remove(failure)
                    return failure.status
        return None

    def take_queue(self) -> bool:
        with self._lock:
            if self._queued_deploys > 0:
                self._queued_deploys -= 1
                return True
        return False

    def free_deleted(self, owner_id: str, now: float) -> None:
        """A free database of `owner_id` was deleted: start refusing its slot, if armed."""
        with self._lock:
            if self._free_slot is not None:
                n, seconds = self._free_slot
                until = None if seconds is None else now + seconds
                self._free_slot_blocked[owner_id] = [n, until]

    def take_free_refusal(self, owner_id: str, now: float) -> bool:
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


def format_seconds(value: float) -> str:
    """``1`` rather than ``1.0``, ``0.5`` as is: how Retry-After reads."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def fault_reply(rule: Rule) -> Reply:
    """Render's answer for an armed request fault (a dropped connection has none)."""
    if rule.kind == "drop_connection":
        return Reply(0, drop=True)
    if rule.kind == "client_error":
        return Reply(rule.status, {"id": str(uuid.uuid4()), "message": rule.message})
    if rule.kind == "rate_limit":
        reply = Reply(429, {"id": str(uuid.uuid4()), "message": "rate limit exceeded"})
        reply.headers.append(("Retry-After", format_seconds(rule.retry_after)))
        return reply
    messages = {500: "internal server error", 502: "bad gateway", 503: "service unavailable",
                504: "gateway timeout"}  # fmt: skip
    message = messages.get(rule.status, "server error")
    reply = Reply(rule.status, {"id": str(uuid.uuid4()), "message": message})
    if rule.retry_after > 0:  # flaky(), or server_error(retry_after=...)
        reply.headers.append(("Retry-After", format_seconds(rule.retry_after)))
    return reply
