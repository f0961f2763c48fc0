"""Typed, immutable views of what Render's API returns.

Every model has a ``from_api(dict)`` classmethod that reads Render's camelCase JSON and is
tolerant by design: Render adds fields over time, so unknown keys are ignored (the full dict is
kept in ``raw``), optional keys may be missing or ``null``, and status strings Render invents
later map to an ``UNKNOWN`` member while the original string stays in ``status_raw``. Only a
missing ``id`` (or ``key`` for env vars) is an error, because nothing can be done without it.

Secrets (passwords, connection strings, env var values) never appear in a ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from render_rotator.secrets import redact_urls

__all__ = [
    "DEPLOY_MODES",
    "DEPLOY_SUCCESSFUL",
    "SERVICE_TYPES",
    "DEPLOY_TERMINAL",
    "POSTGRES_FAILED",
    "POSTGRES_TERMINAL",
    "Blueprint",
    "BlueprintResource",
    "ConnectionInfo",
    "Deploy",
    "DeployStatus",
    "EnvGroup",
    "EnvVar",
    "IPAllowEntry",
    "Owner",
    "Postgres",
    "PostgresStatus",
    "Service",
]


class PostgresStatus(StrEnum):
    """Render's ``databaseStatus`` enum; unrecognised strings become ``UNKNOWN``."""

    CREATING = "creating"
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    CONFIG_RESTART = "config_restart"
    SUSPENDED = "suspended"
    MAINTENANCE_SCHEDULED = "maintenance_scheduled"
    MAINTENANCE_IN_PROGRESS = "maintenance_in_progress"
    RECOVERY_FAILED = "recovery_failed"
    RECOVERY_IN_PROGRESS = "recovery_in_progress"
    UPDATING_INSTANCE = "updating_instance"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> PostgresStatus:
        return cls.UNKNOWN


class DeployStatus(StrEnum):
    """Render's ``deployStatus`` enum; unrecognised strings become ``UNKNOWN``."""

    CREATED = "created"
    QUEUED = "queued"
    BUILD_IN_PROGRESS = "build_in_progress"
    UPDATE_IN_PROGRESS = "update_in_progress"
    PRE_DEPLOY_IN_PROGRESS = "pre_deploy_in_progress"
    LIVE = "live"
    DEACTIVATED = "deactivated"
    BUILD_FAILED = "build_failed"
    UPDATE_FAILED = "update_failed"
    PRE_DEPLOY_FAILED = "pre_deploy_failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> DeployStatus:
        return cls.UNKNOWN


#: Statuses a database stays in until someone acts: waiting longer will not change them.
POSTGRES_TERMINAL: frozenset[PostgresStatus] = frozenset(
    {PostgresStatus.AVAILABLE, PostgresStatus.SUSPENDED, PostgresStatus.RECOVERY_FAILED}
)
#: Statuses that mean the database is broken, whatever was being waited for.
POSTGRES_FAILED: frozenset[PostgresStatus] = frozenset({PostgresStatus.RECOVERY_FAILED})

#: A deploy in one of these will not change again (as in render-oss/cli pkg/deploy/util.go).
DEPLOY_TERMINAL: frozenset[DeployStatus] = frozenset(
    {
        DeployStatus.LIVE,
        DeployStatus.DEACTIVATED,
        DeployStatus.BUILD_FAILED,
        DeployStatus.UPDATE_FAILED,
        DeployStatus.PRE_DEPLOY_FAILED,
        DeployStatus.CANCELED,
    }
)
#: Render's ``DeployMode``: ``deploy_only`` ships the last successful build with the current env
#: vars; ``build_and_deploy`` (Render's default) builds the branch's latest commit first.
DEPLOY_MODES: tuple[str, ...] = ("deploy_only", "build_and_deploy")

#: Render's ``serviceType`` enum. Only ``web_service`` has a maintenance mode.
SERVICE_TYPES: tuple[str, ...] = (
    "static_site",
    "web_service",
    "private_service",
    "background_worker",
    "cron_job",
)

#: ``deactivated`` counts as success: the deploy went live and a newer one has replaced it.
DEPLOY_SUCCESSFUL: frozenset[DeployStatus] = frozenset(
    {DeployStatus.LIVE, DeployStatus.DEACTIVATED}
)


def _parse_time(value: Any) -> datetime | None:
    """Render sends RFC 3339 with up to nanoseconds; ``None``/empty means absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _str(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


@dataclass(frozen=True)
class IPAllowEntry:
    """One CIDR block allowed to reach a database from outside Render."""

    cidr_block: str
    description: str = ""

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> IPAllowEntry:
        return cls(cidr_block=str(data["cidrBlock"]), description=_str(data.get("description")))

    def to_api(self) -> dict[str, str]:
        """The body shape Render expects in ``ipAllowList``."""
        return {"cidrBlock": self.cidr_block, "description": self.description}


def _allow_list(value: Any) -> tuple[IPAllowEntry, ...]:
    if not value:
        return ()
    return tuple(IPAllowEntry.from_api(item) for item in value)


@dataclass(frozen=True)
class Owner:
    """A workspace (``team``) or personal account (``user``) that owns resources."""

    id: str
    name: str = ""
    email: str = ""
    type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Owner:
        return cls(
            id=str(data["id"]),
            name=_str(data.get("name")),
            email=_str(data.get("email")),
            type=_str(data.get("type")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Postgres:
    """A Render Postgres instance: everything rotation needs to recreate it."""

    id: str
    name: str
    status: PostgresStatus
    plan: str
    version: str
    region: str
    owner_id: str
    database_name: str
    database_user: str
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ip_allow_list: tuple[IPAllowEntry, ...] = ()
    disk_size_gb: int | None = None
    environment_id: str | None = None
    suspended: bool = False
    role: str | None = None
    high_availability_enabled: bool = False
    dashboard_url: str | None = None
    status_raw: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Postgres:
        owner = data.get("owner") or {}
        status_raw = _str(data.get("status"), "unknown")
        return cls(
            id=str(data["id"]),
            name=_str(data.get("name")),
            status=PostgresStatus(status_raw),
            status_raw=status_raw,
            plan=_str(data.get("plan")),
            version=_str(data.get("version")),
            region=_str(data.get("region")),
            owner_id=_str(owner.get("id") if owner else data.get("ownerId")),
            database_name=_str(data.get("databaseName")),
            database_user=_str(data.get("databaseUser")),
            expires_at=_parse_time(data.get("expiresAt")),
            created_at=_parse_time(data.get("createdAt")),
            updated_at=_parse_time(data.get("updatedAt")),
            ip_allow_list=_allow_list(data.get("ipAllowList")),
            disk_size_gb=_opt_int(data.get("diskSizeGB")),
            environment_id=_opt_str(data.get("environmentId")),
            suspended=data.get("suspended") == "suspended",
            role=_opt_str(data.get("role")),
            high_availability_enabled=bool(data.get("highAvailabilityEnabled")),
            dashboard_url=_opt_str(data.get("dashboardUrl")),
            raw=dict(data),
        )

    @property
    def is_free(self) -> bool:
        """Free databases expire; that is why this project exists."""
        return self.plan == "free"


@dataclass(frozen=True, repr=False)
class ConnectionInfo:
    """Credentials for a database. Its repr hides the password and the URLs' passwords.

    Render's answer also has `psqlCommand`, a shell line with `PGPASSWORD=<password>` in
    it: it is not kept, so nothing here can ever run it or print it.
    """

    password: str
    internal_connection_string: str
    external_connection_string: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ConnectionInfo:
        return cls(
            password=_str(data.get("password")),
            internal_connection_string=_str(data.get("internalConnectionString")),
            external_connection_string=_str(data.get("externalConnectionString")),
        )

    def __repr__(self) -> str:
        return (
            "ConnectionInfo(password='***', "
            f"internal_connection_string={redact_urls(self.internal_connection_string)!r}, "
            f"external_connection_string={redact_urls(self.external_connection_string)!r})"
        )


@dataclass(frozen=True, repr=False)
class EnvVar:
    """One environment variable. Values are often connection strings, so repr hides them."""

    key: str
    value: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> EnvVar:
        return cls(key=str(data["key"]), value=_str(data.get("value")))

    def __repr__(self) -> str:
        return f"EnvVar(key={self.key!r}, value=<{len(self.value)} chars hidden>)"


@dataclass(frozen=True)
class Service:
    """A Render service (web service, worker, ...), enough to freeze, thaw and redeploy it."""

    id: str
    name: str
    type: str
    owner_id: str
    suspended: bool = False
    suspenders: tuple[str, ...] = ()
    maintenance_mode_enabled: bool | None = None
    maintenance_mode_uri: str = ""
    environment_id: str | None = None
    slug: str | None = None
    dashboard_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Service:
        details = data.get("serviceDetails") or {}
        maintenance = details.get("maintenanceMode") if isinstance(details, Mapping) else None
        enabled = maintenance.get("enabled") if isinstance(maintenance, Mapping) else None
        return cls(
            id=str(data["id"]),
            name=_str(data.get("name")),
            type=_str(data.get("type")),
            owner_id=_str(data.get("ownerId")),
            suspended=data.get("suspended") == "suspended",
            suspenders=tuple(str(s) for s in data.get("suspenders") or ()),
            maintenance_mode_enabled=None if enabled is None else bool(enabled),
            maintenance_mode_uri=_str(
                maintenance.get("uri") if isinstance(maintenance, Mapping) else None
            ),
            environment_id=_opt_str(data.get("environmentId")),
            slug=_opt_str(data.get("slug")),
            dashboard_url=_opt_str(data.get("dashboardUrl")),
            created_at=_parse_time(data.get("createdAt")),
            updated_at=_parse_time(data.get("updatedAt")),
            raw=dict(data),
        )

    @property
    def has_maintenance_mode(self) -> bool:
        """Render offers maintenance mode on web services only."""
        return self.type == "web_service"


@dataclass(frozen=True)
class EnvGroup:
    """A shared set of env vars linked to services."""

    id: str
    name: str
    owner_id: str
    env_vars: tuple[EnvVar, ...] = ()
    service_ids: tuple[str, ...] = ()
    environment_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> EnvGroup:
        links = data.get("serviceLinks") or ()
        return cls(
            id=str(data["id"]),
            name=_str(data.get("name")),
            owner_id=_str(data.get("ownerId")),
            env_vars=tuple(EnvVar.from_api(item) for item in data.get("envVars") or ()),
            service_ids=tuple(str(link["id"]) for link in links if "id" in link),
            environment_id=_opt_str(data.get("environmentId")),
            created_at=_parse_time(data.get("createdAt")),
            updated_at=_parse_time(data.get("updatedAt")),
            raw=dict(data),
        )

    def get(self, key: str) -> str | None:
        """The value of ``key`` in this group, or None when the group does not set it."""
        for env_var in self.env_vars:
            if env_var.key == key:
                return env_var.value
        return None


@dataclass(frozen=True)
class Deploy:
    """One deploy of a service; rotation waits for it to reach a terminal status."""

    id: str
    status: DeployStatus
    status_raw: str = ""
    trigger: str | None = None
    commit_id: str | None = None
    image_ref: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Deploy:
        commit = data.get("commit") or {}
        image = data.get("image") or {}
        status_raw = _str(data.get("status"), "unknown")
        return cls(
            id=str(data["id"]),
            status=DeployStatus(status_raw),
            status_raw=status_raw,
            trigger=_opt_str(data.get("trigger")),
            commit_id=_opt_str(commit.get("id")),
            image_ref=_opt_str(image.get("ref")),
            created_at=_parse_time(data.get("createdAt")),
            updated_at=_parse_time(data.get("updatedAt")),
            started_at=_parse_time(data.get("startedAt")),
            finished_at=_parse_time(data.get("finishedAt")),
            raw=dict(data),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in DEPLOY_TERMINAL

    @property
    def is_successful(self) -> bool:
        return self.status in DEPLOY_SUCCESSFUL


@dataclass(frozen=True)
class BlueprintResource:
    """One resource a Blueprint manages: a service, a database, an env group..."""

    id: str
    name: str
    type: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> BlueprintResource:
        return cls(id=str(data["id"]), name=_str(data.get("name")), type=_str(data.get("type")))


@dataclass(frozen=True)
class Blueprint:
    """A Blueprint (render.yaml) and, when read one by one, the resources it manages.

    ``GET /blueprints`` lists blueprints without their resources; ``GET /blueprints/{id}``
    carries ``resources``. A sync re-applies render.yaml to every one of them.
    """

    id: str
    name: str
    status: str = ""
    auto_sync: bool = False
    repo: str = ""
    branch: str = ""
    path: str = ""
    last_sync: datetime | None = None
    resources: tuple[BlueprintResource, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Blueprint:
        return cls(
            id=str(data["id"]),
            name=_str(data.get("name")),
            status=_str(data.get("status")),
            auto_sync=bool(data.get("autoSync")),
            repo=_str(data.get("repo")),
            branch=_str(data.get("branch")),
            path=_str(data.get("path")),
            last_sync=_parse_time(data.get("lastSync")),
            resources=tuple(
                BlueprintResource.from_api(item) for item in data.get("resources") or ()
            ),
            raw=dict(data),
        )

    def manages(self, resource_id: str) -> BlueprintResource | None:
        """The resource with this id, when this Blueprint manages it."""
        for resource in self.resources:
            if resource.id == resource_id:
                return resource
        return None
