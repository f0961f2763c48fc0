"""PostgreSQL client programs that fail the way real ones do, for the tests of how the tool
picks and rejects clients (a plain module: pytest collects nothing here)."""

from __future__ import annotations

import stat
from pathlib import Path

NO_TLS = 'sslmode value "require" invalid when SSL support is not compiled in'


def fake_client_without_tls(directory: Path, version: str) -> Path:
    """pg_dump, pg_restore and psql that report `version` and cannot open TLS connections."""
    directory.mkdir(parents=True, exist_ok=True)
    for program in ("pg_dump", "pg_restore", "psql"):
        path = directory / program
        path.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "--version" ]; then echo "{program} (PostgreSQL) {version}"; exit 0; fi\n'
            f"echo '{program}: error: invalid connection option: {NO_TLS}' >&2\n"
            "exit 1\n"
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory
