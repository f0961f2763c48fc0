"""Empty a database we created, so an interrupted copy can simply be run again."""

from __future__ import annotations

import logging

from psycopg2 import sql

from render_rotator.postgres.connect import connection
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")


def clean_database(url: str | PgURL, *, connect_timeout: float = 30) -> int:
    """Drop every user schema's contents (and our large objects); returns schemas dropped.

    Only for databases this project created: the rotation calls it on the new database
    before re-running a copy that was interrupted.
    """
    pg = parse_url(url)
    with connection(pg, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname FROM pg_namespace n "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass "
            "AND d.objid = n.oid AND d.deptype = 'e')"
        )
        schemas = [r[0] for r in cur.fetchall()]
        for schema in schemas:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        if "public" in schemas:
            cur.execute("CREATE SCHEMA public")
        cur.execute(
            "SELECT lo_unlink(oid) FROM pg_largeobject_metadata "
            "WHERE lomowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        )
    log.info("cleaned %s (%d schemas dropped)", pg.redacted(), len(schemas))
    return len(schemas)
