"""PostgreSQL connection URLs: parse once, redact always, hand secrets to libpq privately.

A URL's password must never reach argv, logs or exceptions. `PgURL` keeps it apart:
`public_url()` is safe to pass on a command line, `redacted()` is what we print, and
`passfile()` writes a 0600 libpq password file that child tools read via PGPASSFILE.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from render_rotator.errors import InvalidURLError

SCHEMES = ("postgresql", "postgres")
_URL_IN_TEXT = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*:)([^@\s'\"]*)(@)")


@dataclass(frozen=True)
class PgURL:
    """A parsed libpq URL. `password` is excluded from repr."""

    host: str
    port: int
    dbname: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> PgURL:
        """Parse `postgres://` or `postgresql://` URLs; anything else is a clear error."""
        if not isinstance(url, str) or not url.strip():
            raise InvalidURLError(
                "empty database URL",
                hint="give a URL like postgresql://user:password@host:5432/dbname",
            )
        text = url.strip()
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in SCHEMES:
            raise InvalidURLError(
                f"not a PostgreSQL URL: {redact_url(text)!r}",
                hint="it must start with postgresql:// or postgres://",
            )
        try:
            parts = urlsplit(text)
            port = parts.port or 5432
        except ValueError as exc:
            raise InvalidURLError(
                f"malformed database URL {redact_url(text)!r}: {exc}",
                hint="check the host and port, e.g. postgresql://user:pw@host:5432/db",
            ) from None
        if not parts.hostname:
            raise InvalidURLError(
                f"database URL {redact_url(text)!r} has no host",
                hint="use postgresql://user:password@host:5432/dbname",
            )
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise InvalidURLError(
                f"database URL {redact_url(text)!r} names no database",
                hint="add the database name after the host: ...@host:5432/dbname",
            )
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        return cls(
            host=parts.hostname,
            port=port,
            dbname=dbname,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            params=params,
        )

    # -- derived URLs -----------------------------------------------------------------

    def _build(self, password: str | None, extra: dict[str, str] | None = None) -> str:
        netloc = ""
        if self.user:
            netloc = quote(self.user, safe="")
            if password is not None:
                netloc += ":" + password
            netloc += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc += f"{host}:{self.port}"
        params = dict(self.params)
        if extra:
            params.update(extra)
        # %20, not "+": libpq does not decode "+" as a space (e.g. options=-c a=b)
        query = ("?" + urlencode(params, quote_via=quote)) if params else ""
        return f"postgresql://{netloc}/{quote(self.dbname, safe='')}{query}"

    def url(self) -> str:
        """The full URL, password included: only for handing to another system."""
        pw = quote(self.password, safe="") if self.password is not None else None
        return self._build(pw)

    def public_url(self, **extra: str) -> str:
        """The URL without its password: safe for argv (libpq reads the password elsewhere)."""
        return self._build(None, extra or None)

    def redacted(self) -> str:
        """What we print: `postgresql://user:***@host:port/db`."""
        return self._build("***" if self.password is not None else None)

    def with_dbname(self, dbname: str) -> PgURL:
        return replace(self, dbname=dbname)

    @property
    def sslmode(self) -> str | None:
        return dict(self.params).get("sslmode")

    def psycopg2_kwargs(self, connect_timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments for psycopg2.connect, password passed in memory only."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
        }
        if self.user:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        for key, value in self.params:
            kwargs[key] = value
        if connect_timeout is not None:
            kwargs["connect_timeout"] = max(2, int(round(connect_timeout)))
        return kwargs

    def scrub(self, text: str) -> str:
        """Remove this URL's password from arbitrary text (e.g. an error message)."""
        return scrub_secrets(text, [self.password] if self.password else [])

    @contextlib.contextmanager
    def passfile(self) -> Iterator[Path]:
        """A 0600 libpq password file for this URL, deleted afterwards."""
        with passfile_for([self]) as path:
            yield path


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def passfile_for(urls: list[PgURL]) -> Iterator[Path]:
    """Write one 0600 .pgpass covering every URL given; remove it on exit."""
    fd, name = tempfile.mkstemp(prefix="render-rotator-", suffix=".pgpass")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            for u in urls:
                if u.password is None:
                    continue
                fields = [u.host, str(u.port), "*", u.user or "*", u.password]
                handle.write(":".join(_pgpass_escape(f) for f in fields) + "\n")
                # libpq matches "localhost" for Unix-socket connections; cover both spellings.
                if u.host in ("127.0.0.1", "::1"):
                    fields[0] = "localhost"
                    handle.write(":".join(_pgpass_escape(f) for f in fields) + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def redact_url(text: str) -> str:
    """Replace the password of every URL (any scheme) inside `text` with ***."""
    return _URL_IN_TEXT.sub(r"\1***\3", text)


def scrub_secrets(text: str, secrets: list[str]) -> str:
    """Redact URLs, then blank every known secret string that still appears."""
    text = redact_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
            encoded = quote(secret, safe="")
            if encoded != secret:
                text = text.replace(encoded, "***")
    return text


TLS_SSLMODES = ("require", "verify-ca", "verify-full")


def require_tls(url: str) -> str:
    """`url` with ``sslmode=require`` unless it already asks for TLS (or verifies more).

    Render's external connection strings carry no ``sslmode`` yet accept TLS connections
    only; libpq's default (``prefer``) would quietly try without TLS on a client built without
    it and fail with a confusing refusal. Asking for TLS makes the tool choose a client that
    speaks it and fail early and clearly otherwise. Only for URLs we connect to: the values
    written into env vars stay exactly as Render gives them.
    """
    parsed = PgURL.parse(url)
    if parsed.sslmode in TLS_SSLMODES:
        return url
    params = tuple((k, v) for k, v in parsed.params if k != "sslmode") + (("sslmode", "require"),)
    return replace(parsed, params=params).url()


def parse_url(url: str | PgURL) -> PgURL:
    """Accept a URL string or an already parsed PgURL."""
    return url if isinstance(url, PgURL) else PgURL.parse(url)
