"""Empty a database we created, so an interrupted copy can simply be run again."""

from __future__ import annotations

import logging

from render_rotator.postgres.connect import connection
from render_rotator.postgres.copy import clean_target
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")


def clean_database(
    url: str | PgURL, *, connect_timeout: float = 30, command_timeout: float = 600
) -> int:
    """Drop every user object (and large object) in the database; returns how many.

    Only for databases this project created: the rotation calls it on the new database
    before re-running a copy that was interrupted. Each statement obeys `command_timeout`
    (and a lock timeout), so another session's open transaction stops it with a clear error
    instead of a hang.
    """
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout, statement_timeout=command_timeout) as conn:
        dropped = clean_target(conn)
    log.info("cleaned %s (%d objects dropped)", pg.redacted(), dropped)
    return dropped
