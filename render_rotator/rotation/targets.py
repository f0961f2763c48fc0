"""Targets: the env vars (on services or env groups) that hold a database's connection string.

We never store their values (they hold passwords). To know what a target points at we parse
its value and compare host, port, database and user with each database's connection strings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg2
from psycopg2.extensions import parse_dsn

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


_SCHEME = re.compile(r"^(?P<scheme>postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?)://", re.IGNORECASE)


@dataclass(frozen=True)
class Endpoint:
    """Which database a connection string reaches: host, port, database name, user."""

    host: str
    port: int
    dbname: str
    user: str | None

    @property
    def first_label(self) -> str:
        return self.host.split(".", 1)[0]


def endpoint(value: str | None) -> Endpoint | None:
    """Parse a URL (``postgres://``, ``postgresql://``, ``postgresql+driver://`` as SQLAlchemy
    writes them) or a libpq keyword string (``host=... dbname=...``); None if neither."""
    if not value or not value.strip():
        return None
    text = value.strip()
    match = _SCHEME.match(text)
    if match:
        try:
            parsed = PgURL.parse("postgresql://" + text[match.end() :])
        except InvalidURLError:
            return None
        return Endpoint(parsed.host.lower().rstrip("."), parsed.port, parsed.dbname, parsed.user)
    if "://" in text or "=" not in text:
        return None
    try:
        params = parse_dsn(text)
    except psycopg2.ProgrammingError:
        return None
    host, dbname = params.get("host"), params.get("dbname")
    if not host or not dbname:
        return None
    try:
        port = int(params.get("port") or 5432)
    except ValueError:
        return None
    return Endpoint(host.lower().rstrip("."), port, dbname, params.get("user"))


def _same_database(mine: Endpoint, ref: Endpoint, *, by_label: bool = False) -> bool:
    if mine.dbname != ref.dbname or mine.port != ref.port:
        return False
    if mine.user is not None and ref.user is not None and mine.user != ref.user:
        return False
    if by_label:
        return mine.first_label == ref.first_label
    return mine.host == ref.host


def points_at(value: str | None, info: ConnectionInfo) -> str | None:
    """ "internal" / "external" when `value` connects to that database, else None.

    Matched on host, port, database name and user (query parameters such as ``sslmode`` and
    the password do not matter). Render's internal host is the bare id (``dpg-xxx-a``); a
    value that spells it with a domain (``dpg-xxx-a.<something>``) other than the external
    host still counts as internal.
    """
    mine = endpoint(value)
    if mine is None:
        return None
    internal = endpoint(info.internal_connection_string)
    external = endpoint(info.external_connection_string)
    if internal is not None and _same_database(mine, internal):
        return "internal"
    if external is not None and _same_database(mine, external):
        return "external"
    if (
        internal is not None
        and "." not in internal.host
        and internal.host.startswith("dpg-")
        and _same_database(mine, internal, by_label=True)
    ):
        return "internal"
    return None


def new_value(old_value: str | None, info: ConnectionInfo, connection: str) -> str:
    """The new connection string: Render's `connection` string for the new database, keeping
    what the user had added to the old value: query parameters (``sslmode``...) and the URL
    scheme when it is another spelling (``postgres://``, ``postgresql+psycopg://``)."""
    base = (
        info.internal_connection_string
        if connection == "internal"
        else info.external_connection_string
    )
    if not old_value or endpoint(old_value) is None or "://" not in old_value:
        return base
    old = old_value.strip()
    try:
        old_parts = urlsplit(old)
        parts = urlsplit(base)
    except ValueError:
        return base
    scheme = old_parts.scheme if _SCHEME.match(old) else parts.scheme
    params = parse_qsl(parts.query, keep_blank_values=True)
    have = {key for key, _ in params}
    for key, val in parse_qsl(old_parts.query, keep_blank_values=True):
        if key not in have:
            params.append((key, val))
            have.add(key)
    query = urlencode(params, quote_via=quote)
    return urlunsplit(parts._replace(scheme=scheme, query=query))
