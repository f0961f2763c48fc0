"""`render-rotator migrate`: one database into another, by the fastest safe path, proven equal.

When the target can be created first (or exists), the data is copied directly; the
result is verified against the source's inventory before success is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from render_rotator.postgres.inventory import VerificationReport
from render_rotator.postgres.manager import DatabaseManager
from render_rotator.postgres.url import parse_url


@dataclass
class MigrateResult:
    """What `migrate` did."""

    source: str
    target: str
    method: str
    seconds: float
    report: VerificationReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": parse_url(self.source).redacted(),
            "target": parse_url(self.target).redacted(),
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "verified": None if self.report is None else self.report.equal,
            "verification": None if self.report is None else self.report.to_dict(),
        }


def migrate(
    source_url: str,
    target_url: str,
    *,
    admin_url: str | None = None,
    create_db: str | None = None,
    jobs: int = 2,
    verify: bool = True,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    pg_bin: str | None = None,
) -> MigrateResult:
    """Create (optionally), copy, verify. Raises a typed error on any failure."""
    started = time.monotonic()
    manager = DatabaseManager(
        admin_url,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        pg_bin=pg_bin,
        jobs=jobs,
    )
    target = parse_url(target_url)
    if create_db and target.dbname != create_db:
        target = target.with_dbname(create_db)
    report = manager.migrate(source_url, target.url(), create_db, verify=verify)
    return MigrateResult(
        source=source_url,
        target=target.url(),
        method="pg_dump + pg_restore",
        seconds=time.monotonic() - started,
        report=report,
    )
