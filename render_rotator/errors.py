"""Every error render-rotator raises, one tree, so callers catch our types only.

    RenderRotatorError                  exit 1 unless stated
    ├── UsageError                      exit 2: bad input, nothing was done
    │   ├── ConfigError                 a config file problem (names file and key)
    │   ├── InvalidURLError             a connection URL that cannot be parsed
    │   ├── MissingAPIKeyError          no RENDER_API_KEY and no api_key argument
    │   └── ClientTooOldError           local pg_dump older than the server
    ├── DatabaseError                   PostgreSQL side
    │   ├── ConnectError                could not connect (after retries for transient causes)
    │   │   └── AuthenticationError     wrong user or password (never retried)
    │   ├── DatabaseNotFoundError       the database named in a URL does not exist
    │   ├── DatabaseExistsError         create_database on a name already taken
    │   ├── ToolError                   pg_dump / pg_restore / psql failed
    │   │   └── CommandTimeoutError     a command exceeded command_timeout and was killed
    │   ├── BackupError                 an archive is unreadable, missing or unwritable
    │   └── CopyError                   the parallel copy failed
    ├── VerificationError               exit 3: the copy is not identical to the source
    │   └── DriftError                  the old database changed after the copy's snapshot
    ├── RenderAPIError                  Render answered with an error (carries Render's message)
    │   ├── UnauthorizedError           401 / 403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409 and refusals such as the one-free-database limit
    │   ├── RateLimitedError            429 after retries ran out
    │   ├── ServerError                 5xx after retries ran out
    │   └── APITimeoutError             no answer, or a wait that ran past its deadline
    └── RotationError                   the rotation workflow stopped (journal says where)

Messages never contain secrets: URLs are redacted and API keys never included where an
error is raised, and `str()` of any of these errors blanks whatever `render_rotator.secrets`
knows (URL passwords, every registered secret) once more, so a message that quotes a server's
or a tool's words cannot carry one either.
"""

from __future__ import annotations

from render_rotator import secrets


class RenderRotatorError(Exception):
    """Base of every render-rotator error."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.message} ({self.hint})" if self.hint else self.message
        return secrets.scrub(text)


class UsageError(RenderRotatorError):
    """Bad input from the user; nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is missing, malformed, or has a bad key."""


class InvalidURLError(UsageError):
    """A PostgreSQL connection URL that cannot be used."""


class MissingAPIKeyError(UsageError):
    """No Render API key was given."""


class ClientTooOldError(UsageError):
    """The local PostgreSQL client tools are older than the server."""


class DatabaseError(RenderRotatorError):
    """Something went wrong talking to PostgreSQL."""


class ConnectError(DatabaseError):
    """Could not open a connection."""


class AuthenticationError(ConnectError):
    """The server refused the user name or password."""


class DatabaseNotFoundError(DatabaseError):
    """The database named in the URL does not exist on the server."""


class DatabaseExistsError(DatabaseError):
    """The database to create already exists."""


class ToolError(DatabaseError):
    """A PostgreSQL client program failed."""

    def __init__(
        self, message: str, *, hint: str | None = None, command: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command


class CommandTimeoutError(ToolError):
    """A command ran past its wall-clock limit and was killed."""


class BackupError(DatabaseError):
    """A backup archive could not be written or read back."""


class CopyError(DatabaseError):
    """The parallel copy failed; the target may hold partial data."""


class VerificationError(RenderRotatorError):
    """The target does not hold exactly the source's data."""

    exit_code = 3

    def __init__(self, message: str, *, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = differences or []


class DriftError(VerificationError):
    """The old database was written to after the snapshot the copy was taken from: it is
    kept (never deleted), and `tables` names where the writes went."""

    def __init__(
        self, message: str, *, differences: list[str] | None = None, tables: list[str] | None = None
    ) -> None:
        super().__init__(message, differences=differences)
        self.tables = tables or []


class RenderAPIError(RenderRotatorError):
    """Render's API answered with an error; carries Render's own message."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
        hint: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.method = method
        self.path = path
        self.request_id = request_id  # Render-Request-Id: what Render's support asks for


class UnauthorizedError(RenderAPIError):
    """The API key is missing, wrong, or lacks access (401/403)."""


class NotFoundError(RenderAPIError):
    """The resource does not exist (404)."""


class ConflictError(RenderAPIError):
    """Render refused because of the current state (409, free-tier limits, ...)."""


class RateLimitedError(RenderAPIError):
    """Still rate limited (429) after every retry."""


class ServerError(RenderAPIError):
    """Render kept failing (5xx) after every retry."""


class APITimeoutError(RenderAPIError):
    """No answer in time, or a wait ran past its deadline."""


class RotationError(RenderRotatorError):
    """The rotation stopped; the journal records how far it got."""
