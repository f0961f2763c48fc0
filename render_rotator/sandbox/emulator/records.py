"""Render's vocabulary and the emulator's records of its resources.

The constants are Render's (plans, versions, regions, service types, error wordings); the
dataclasses are what the emulator stores per owner, database, service, deploy, env group and
Blueprint; `State` holds them all under one lock.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
BUILT_OUTCOMES = ("live", "update_failed", "pre_deploy_failed")
MAINTENANCE_ONLY_WEB_MESSAGE = "maintenance mode is only supported for web services"
DEPLOY_ONLY_CONFLICT_MESSAGE = (
    "deployMode cannot be combined with commitId or imageUrl or clearCache"
)
DEPLOY_ONLY_NO_BUILD_MESSAGE = (
    "deployMode deploy_only requires a previous successful build, and this service has none"
)
DASHBOARD_KIND = {
    "static_site": "static",
    "web_service": "web",
    "private_service": "pserv",
    "background_worker": "worker",
    "cron_job": "cron",
}
DEFAULT_IMAGE = "docker.io/library/nginx:latest"
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100

ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # the base32hex of Render's xid-style ids
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def new_id(prefix: str) -> str:
    """A Render-style id: ``<prefix>-`` and 20 base32hex characters."""
    return prefix + "-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))


def suffix(length: int = 4) -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(length))


def password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def iso(ts: float) -> str:
    """Render's timestamp format: RFC 3339, microseconds, ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ident(text: str, fallback: str = "app") -> str:
    """A lowercase SQL identifier base from a free-form name (Render derives names this way)."""
    base = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    base = re.sub(r"_+", "_", base) or fallback
    if not base[0].isalpha():
        base = f"{fallback}_{base}"
    return base[:40].rstrip("_")


# -- state records -----------------------------------------------------------------------------


@dataclass
class Owner:
    id: str
    seq: int
    name: str
    email: str
    type: str

    def json(self) -> dict[str, Any]:
        return {"email": self.email, "id": self.id, "name": self.name, "type": self.type}


@dataclass
class Postgres:
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
class EnvVar:
    key: str
    value: str = field(repr=False)
    seq: int


@dataclass
class Deploy:
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
class Service:
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
    env_vars: dict[str, EnvVar] = field(default_factory=dict)
    suspended: bool = False
    maintenance: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "uri": ""})
    auto_deploy: str = "yes"
    health_check_path: str = ""
    deploys: list[Deploy] = field(default_factory=list)
    environment_id: str | None = None
    type: str = "web_service"
    deploy_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-") or self.id


@dataclass
class Blueprint:
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
class EnvGroup:
    id: str
    seq: int
    name: str
    owner_id: str
    created: float
    updated: float
    env_vars: list[EnvVar] = field(default_factory=list)  # newest first, as Render shows them
    service_ids: list[str] = field(default_factory=list)
    environment_id: str | None = None


class State:
    """Every record of one emulator, and the lock that guards them (re-entrant: handlers
    call helpers that lock too)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.seq = 0
        self.owners: dict[str, Owner] = {}
        self.postgres: dict[str, Postgres] = {}
        self.services: dict[str, Service] = {}
        self.env_groups: dict[str, EnvGroup] = {}
        self.blueprints: dict[str, Blueprint] = {}

    def next_seq(self) -> int:
        """A number that orders everything created (lists, cursors, request ids)."""
        with self.lock:
            self.seq += 1
            return self.seq
