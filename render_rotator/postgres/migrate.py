"""`render-rotator migrate`: one database into another, by the fastest safe path, proven equal.

When the target can be created first (or exists), the data is copied directly; the
result is verified by content against the copied snapshot before success is reported.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from render_rotator.errors import RenderRotatorError
from render_rotator.postgres.copy import CopyResult, copy_database
from render_rotator.postgres.inventory import VerificationReport
from render_rotator.postgres.manager import DatabaseManager
from render_rotator.postgres.url import parse_url

log = logging.getLogger("render_rotator.postgres")


@dataclass
class MigrateResult:
    """What `migrate` did."""

    source: str
    target: str
    method: str
    seconds: float
    report: VerificationReport | None
    copy: CopyResult | None = None  # rows, bytes, phases and critical path of the copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": parse_url(self.source).redacted(),
            "target": parse_url(self.target).redacted(),
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "verified": None if self.report is None else self.report.equal,
            "verification": None if self.report is None else self.report.to_dict(),
            "copy": None if self.copy is None else self.copy.to_dict(),
        }


def migrate(
    source_url: str,
    target_url: str,
    *,
    admin_url: str | None = None,
    create_db: str | None = None,
    jobs: int = 2,
    verify: bool = True,
    verify_mode: str = "content",
    clean: bool = False,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    pg_bin: str | None = None,
) -> MigrateResult:
    """Create (optionally), copy in parallel, verify. Raises a typed error on any failure.

    `clean=True` drops every user object already in the target first (only on request:
    without it a target that is not empty is refused).

    A database this call created is dropped again when the copy fails, so nothing
    half-created is left behind.
    """
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
    parse_url(source_url)
    if create_db:
        # owned by the target URL's user (when not the admin), who then copies into it
        manager.create_database(create_db, owner=manager.owner_for(target))
    try:
        copied = copy_database(
            source_url,
            target,
            jobs=jobs,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            pg_bin=pg_bin,
            verify=verify,
            verify_mode=verify_mode,
            clean=clean,
        )
    except BaseException:
        if create_db:
            with contextlib.suppress(RenderRotatorError):
                manager.drop_database(create_db)
                log.warning("removed the partially copied database %r", create_db)
        raise
    return MigrateResult(
        source=source_url,
        target=target.url(),
        method=f"parallel copy (jobs={jobs})",
        seconds=time.monotonic() - started,
        report=copied.verification,
        copy=copied,
    )
