"""PostgreSQL connection URLs: parse once, redact always, hand secrets to libpq privately.

A URL's password must never reach argv, logs or exceptions. `PgURL` keeps it apart:
`public_url()` is safe to pass on a command line, `redacted()` is what we print, and
postgres/passfiles.py writes the 0600 libpq password file child tools read via PGPASSFILE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from render_rotator import secrets
from render_rotator.errors import InvalidURLError

SCHEMES = ("postgresql", "postgres")
_URL_SHAPE = "give a URL like postgresql://user:password@host:5432/dbname"
_ENCODE_HINT = (
    "use postgresql://user:password@host:5432/dbname and percent-encode special characters "
    "in the password: @ as %40, : as %3A, / as %2F, % as %25, ? as %3F, # as %23, space as %20"
)


def _safe_shape(text: str) -> str:
    """What we may print of a URL that did not parse: its scheme and, when it cannot hold
    part of a password, its host; the rest as ***."""
    scheme, _, rest = text.partition("://")
    if not rest:
        return (
            repr(scheme[:20] + ("..." if len(scheme) > 20 else "")) if "@" not in text else "'***'"
        )
    if "@" in rest or ":" in rest.split("/", 1)[0]:
        return f"'{scheme}://***'"
    host = rest.split("/", 1)[0].split("?", 1)[0]
    return f"'{scheme}://{host}/...'"


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
        """Parse `postgres://` or `postgresql://` URLs; anything else is a clear error.

        Errors never show the URL's password, not even part of one that was not
        percent-encoded (which is what usually makes a URL unparseable). A ``password=``
        parameter is taken as the password, so it too reaches libpq only through a passfile.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidURLError("empty database URL", hint=_URL_SHAPE)
        text = url.strip()
        bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise InvalidURLError(
                f"the database URL {_safe_shape(text)} contains a control character "
                f"(code {ord(bad)})",
                hint="remove line breaks, tabs and other control characters from it",
            )
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in SCHEMES:
            raise InvalidURLError(
                f"not a PostgreSQL URL: {_safe_shape(text)}",
                hint="it must start with postgresql:// or postgres://",
            )
        parts = urlsplit(text)
        try:
            port = parts.port or 5432
        except ValueError:
            raise InvalidURLError(
                f"malformed database URL {_safe_shape(text)}: the port is not a number "
                "between 0 and 65535",
                hint=_ENCODE_HINT,
            ) from None
        if not parts.hostname:
            raise InvalidURLError(
                f"database URL {_safe_shape(text)} has no host", hint=_ENCODE_HINT
            )
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise InvalidURLError(
                f"database URL {_safe_shape(text)} names no database",
                hint="add the database name after the host: ...@host:5432/dbname",
            )
        if "/" in dbname or "@" in dbname:
            raise InvalidURLError(
                f"malformed database URL {_safe_shape(text)}: the database name contains "
                "'/' or '@'",
                hint=_ENCODE_HINT,
            )
        params = list(parse_qsl(parts.query, keep_blank_values=True))
        password = unquote(parts.password) if parts.password is not None else None
        in_query = [v for k, v in params if k == "password"]
        if in_query:
            params = [(k, v) for k, v in params if k != "password"]
            if password is None:
                password = in_query[-1]
        return cls(
            host=parts.hostname,
            port=port,
            dbname=dbname,
            user=unquote(parts.username) if parts.username else None,
            password=password,
            params=tuple(params),
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
        return self._build(secrets.MASK if self.password is not None else None)

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
        return secrets.scrub(text, [self.password])


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
