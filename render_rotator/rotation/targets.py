"""Targets: the env vars (on services or env groups) that hold a database's connection string.

We never store their values (they hold passwords). To know what a target points at we parse
its value and compare host, database and user with each database's connection strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from render_rotator.config import TargetConfig
from render_rotator.errors import InvalidURLError, NotFoundError, UsageError
from render_rotator.postgres.url import PgURL
from render_rotator.render import ConnectionInfo, RenderClient


@dataclass(frozen=True)
class TargetValue:
    """A target and its current value (kept in memory only)."""

    target: TargetConfig
    value: str | None

    @property
    def label(self) -> str:
        return self.target.label


def fingerprint(value: str | None) -> str | None:
    """A hash we may store in the journal to recognise a value without keeping it."""
    if value is None:
        return None
    return hashlib.sha256(value.encode()).hexdigest()


def read_target(client: RenderClient, target: TargetConfig) -> TargetValue:
    """The target's current value (None when the key is not set)."""
    if target.service:
        try:
            client.get_service(target.service)
        except NotFoundError:
            raise UsageError(
                f"service {target.service} (target {target.label}) was not found on Render",
                hint="check the service id in the config",
            ) from None
        try:
            return TargetValue(target, client.get_env_var(target.service, target.key).value)
        except NotFoundError:
            return TargetValue(target, None)
    assert target.env_group is not None
    try:
        group = client.get_env_group(target.env_group)
    except NotFoundError:
        raise UsageError(
            f"env group {target.env_group} (target {target.label}) was not found on Render",
            hint="check the env_group id in the config",
        ) from None
    return TargetValue(target, group.get(target.key))


def write_target(client: RenderClient, target: TargetConfig, value: str) -> None:
    """Set exactly one key: never replaces a service's or group's whole env."""
    if target.service:
        client.set_env_var(target.service, target.key, value)
    else:
        assert target.env_group is not None
        client.set_env_group_var(target.env_group, target.key, value)


def _identity(url: str) -> tuple[str, str, str | None] | None:
    try:
        parsed = PgURL.parse(url)
    except InvalidURLError:
        return None
    return parsed.host.lower(), parsed.dbname, parsed.user


def points_at(value: str | None, info: ConnectionInfo) -> str | None:
    """ "internal" / "external" when `value` connects to that database, else None."""
    if not value:
        return None
    mine = _identity(value)
    if mine is None:
        return None
    if info.internal_connection_string and mine == _identity(info.internal_connection_string):
        return "internal"
    if info.external_connection_string and mine == _identity(info.external_connection_string):
        return "external"
    # Render's internal host is the id-based short name; accept the full internal domain too.
    internal = _identity(info.internal_connection_string or "")
    if internal and mine[1:] == internal[1:] and mine[0].split(".")[0] == internal[0]:
        return "internal"
    return None


def new_value(old_value: str | None, info: ConnectionInfo, connection: str) -> str:
    """The new connection string, keeping query parameters the user had added (sslmode...)."""
    base = (
        info.internal_connection_string
        if connection == "internal"
        else info.external_connection_string
    )
    if not old_value:
        return base
    try:
        old_query = urlsplit(old_value).query
    except ValueError:
        return base
    if not old_query:
        return base
    parts = urlsplit(base)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, val in parse_qsl(old_query, keep_blank_values=True):
        params.setdefault(key, val)
    return urlunsplit(parts._replace(query=urlencode(params)))
