"""The migrate engine: one database into another, by the fastest safe path, proven equal.

`migrate` creates the target database when asked, copies the data directly (the parallel
copy, in one snapshot) and verifies the result by content against the copied snapshot
before success is reported. `render-rotator migrate` and the seed's `migrate_database` are
both this one call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from render_rotator import secrets
from render_rotator.errors import RenderRotatorError, UsageError
from render_rotator.postgres.copy import CopyResult, copy_database
from render_rotator.postgres.inventory import VerificationReport
from render_rotator.postgres.manager import DatabaseManager, validate_database_name
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

    `create_db` (needs `admin_url`) is created first and copied into, whatever database the
    target URL names. A database this call created is dropped again when the copy fails, so
    nothing half-created is left behind.
    """
    started = time.monotonic()
    source, target = parse_url(source_url), parse_url(target_url)
    admin = parse_url(admin_url) if admin_url else None
    for url in (source, target, admin):
        secrets.register(url.password if url else None)
    if create_db is not None:
        validate_database_name(create_db)
        if admin is None:
            raise UsageError(
                "create_db (--create-db) needs admin_url (--admin-url)",
                hint="give the URL of a role that may create databases",
            )
        if target.dbname != create_db:
            log.warning(
                "the target URL names database %r but the database to create is %r: "
                "copying into %r",
                target.dbname,
                create_db,
                create_db,
            )
            target = target.with_dbname(create_db)
    manager = DatabaseManager(
        admin_url,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        pg_bin=pg_bin,
        jobs=jobs,
    )
    if create_db:
        # owned by the target URL's user (when not the admin), who then copies into it
        manager.create_database(create_db, owner=manager.owner_for(target))
    try:
        copied = copy_database(
            source,
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
        source=source.url(),
        target=target.url(),
        method=f"parallel copy (jobs={jobs})",
        seconds=time.monotonic() - started,
        report=copied.verification,
        copy=copied,
    )


def migrate_database(
    source_url: str,
    target_url: str,
    admin_url: str,
    db_name: str,
    *,
    connect_timeout: float = 30,
    command_timeout: float = 600,
    verify: bool = True,
    raise_errors: bool = False,
) -> bool:
    """The seed's one-call migration: True when the new database `db_name` holds a verified
    copy of the source. The same engine as `migrate` (and `render-rotator migrate`).

    As in the seed's examples it answers with a bool; the reason for a False is logged
    (secrets removed). Pass raise_errors=True to get the typed exception instead.
    """
    try:
        migrate(
            source_url,
            target_url,
            admin_url=admin_url,
            create_db=db_name,
            verify=verify,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
    except RenderRotatorError as exc:
        if raise_errors:
            raise
        log.error("migration failed: %s", exc)
        return False
    return True
