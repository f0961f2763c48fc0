"""Find PostgreSQL client and server programs, and know their major versions.

pg_dump must be at least as new as the server it dumps, so we look in every usual place
(an explicit directory, RENDER_ROTATOR_PG_BIN, PATH, Debian's /usr/lib/postgresql/N/bin,
the `pgserver` PyPI package) and prefer the newest.
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

PG_BIN_ENV = "RENDER_ROTATOR_PG_BIN"
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)(?:\.\d+)*)")


@dataclass(frozen=True)
class PgBin:
    """A directory of PostgreSQL programs of one major version."""

    directory: Path
    major: int
    version: str

    def tool(self, name: str) -> str:
        return str(self.directory / name)

    def has(self, name: str) -> bool:
        return (self.directory / name).is_file()


@functools.lru_cache(maxsize=64)
def _program_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if not match:
        return None
    return int(match.group(2)), match.group(1)


def bin_dir_info(directory: str | Path, program: str = "pg_dump") -> PgBin | None:
    """Describe `directory` if it holds `program`; None otherwise."""
    path = Path(directory) / program
    if not path.is_file():
        return None
    found = _program_version(str(path))
    if found is None:
        return None
    return PgBin(Path(directory), found[0], found[1])


def pgserver_bin_dir() -> Path | None:
    """The PostgreSQL binaries shipped by the `pgserver` package, if installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def candidate_dirs() -> list[Path]:
    """Every place a PostgreSQL bin directory may be, most specific first."""
    dirs: list[Path] = []
    env = os.environ.get(PG_BIN_ENV)
    if env:
        dirs.append(Path(env))
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(os.path.realpath(on_path)).parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        dirs.extend(sorted((p / "bin" for p in debian.iterdir()), reverse=True))
    bundled = pgserver_bin_dir()
    if bundled:
        dirs.append(bundled)
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


def available(program: str = "pg_dump") -> list[PgBin]:
    """All bin directories holding `program`, newest major first."""
    found = [info for d in candidate_dirs() if (info := bin_dir_info(d, program))]
    found.sort(key=lambda b: b.major, reverse=True)
    return found


def resolve_client(pg_bin: str | Path | None = None, program: str = "pg_dump") -> PgBin:
    """The client directory to use: the one asked for, else the newest found."""
    explicit = pg_bin or os.environ.get(PG_BIN_ENV)
    if explicit:
        info = bin_dir_info(explicit, program)
        if info is None:
            raise UsageError(
                f"no usable {program} in {explicit}",
                hint=f"point --pg-bin / {PG_BIN_ENV} at a PostgreSQL bin directory",
            )
        return info
    found = available(program)
    if not found:
        raise UsageError(
            f"{program} was not found",
            hint="install the PostgreSQL client (e.g. apt-get install postgresql-client) "
            f"or set {PG_BIN_ENV} to its bin directory",
        )
    return found[0]


def check_client_for_server(client: PgBin, server_major: int, program: str = "pg_dump") -> None:
    """The version rule: a dump needs a client at least as new as the server."""
    if client.major >= server_major:
        return
    raise ClientTooOldError(
        f"{program} {client.version} (major {client.major}, in {client.directory}) is older "
        f"than the server (PostgreSQL {server_major}) and cannot dump it",
        hint=f"install PostgreSQL {server_major} client tools (e.g. apt-get install "
        f"postgresql-client-{server_major} from apt.postgresql.org) and point --pg-bin or "
        f"{PG_BIN_ENV} at their bin directory",
    )


def server_major_from_num(server_version_num: int) -> int:
    """`server_version_num` 150008 -> 15; 90624 -> 9."""
    if server_version_num >= 100000:
        return server_version_num // 10000
    return server_version_num // 100
