"""Empty a database: find every user object in it, and drop them all.

The copy refuses a target that holds anything (`target_objects`) unless asked to clean it
(`clean_target`); the rotation empties a database it created before re-running a copy that
was interrupted (`clean_database`).
"""

from __future__ import annotations

import logging

import psycopg2.extensions

from render_rotator.postgres.catalog import USER_SCHEMA
from render_rotator.postgres.connect import connection
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

_TARGET_OBJECTS_SQL = f"""
WITH ns AS (
    SELECT n.oid, n.nspname FROM pg_namespace n WHERE {USER_SCHEMA}
), objs(classid, objid, extra) AS (
    SELECT 'pg_namespace'::regclass, n.oid, '' FROM ns n WHERE n.nspname <> 'public'
    UNION ALL SELECT 'pg_class'::regclass, c.oid, c.relkind::text FROM pg_class c
        WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind IN ('r','p','v','m','S','f','c')
    UNION ALL SELECT 'pg_proc'::regclass, p.oid, '' FROM pg_proc p
        WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_type'::regclass, t.oid, t.typtype::text FROM pg_type t
        WHERE t.typnamespace IN (SELECT oid FROM ns) AND t.typtype IN ('b','d','e','r')
          AND t.typcategory <> 'A' AND t.typrelid = 0
    UNION ALL SELECT 'pg_collation'::regclass, o.oid, '' FROM pg_collation o
        WHERE o.collnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_conversion'::regclass, o.oid, '' FROM pg_conversion o
        WHERE o.connamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_operator'::regclass, o.oid, '' FROM pg_operator o
        WHERE o.oprnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_opfamily'::regclass, o.oid, '' FROM pg_opfamily o
        WHERE o.opfnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_ts_config'::regclass, o.oid, '' FROM pg_ts_config o
        WHERE o.cfgnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_ts_dict'::regclass, o.oid, '' FROM pg_ts_dict o
        WHERE o.dictnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_statistic_ext'::regclass, o.oid, '' FROM pg_statistic_ext o
        WHERE o.stxnamespace IN (SELECT oid FROM ns)
    UNION ALL SELECT 'pg_publication'::regclass, o.oid, '' FROM pg_publication o
    UNION ALL SELECT 'pg_foreign_server'::regclass, o.oid, '' FROM pg_foreign_server o
    UNION ALL SELECT 'pg_event_trigger'::regclass, o.oid, '' FROM pg_event_trigger o
)
SELECT x.type, x.identity, o.extra
FROM objs o, LATERAL pg_identify_object(o.classid, o.objid, 0) x
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid
                  AND d.objsubid = 0 AND d.deptype IN ('e', 'i'))
ORDER BY o.classid <> 'pg_namespace'::regclass, o.classid <> 'pg_class'::regclass, 2
"""

_DROP_KEYWORDS = {
    "schema": "SCHEMA",
    "table": "TABLE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "foreign table": "FOREIGN TABLE",
    "composite type": "TYPE",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "type": "TYPE",
    "collation": "COLLATION",
    "conversion": "CONVERSION",
    "operator": "OPERATOR",
    "operator family": "OPERATOR FAMILY",
    "text search configuration": "TEXT SEARCH CONFIGURATION",
    "text search dictionary": "TEXT SEARCH DICTIONARY",
    "statistics object": "STATISTICS",
    "publication": "PUBLICATION",
    "server": "SERVER",
    "event trigger": "EVENT TRIGGER",
}


def target_objects(conn: psycopg2.extensions.connection) -> list[str]:
    """Every user object in the target ("table public.t", "large object 16400", ...)."""
    with conn.cursor() as cur:
        cur.execute(_TARGET_OBJECTS_SQL)
        found = [f"{kind} {identity}" for kind, identity, _extra in cur.fetchall()]
        cur.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY 1 LIMIT 5")
        found += [f"large object {r[0]}" for r in cur.fetchall()]
    return found


def clean_target(conn: psycopg2.extensions.connection) -> int:
    """Drop every user object (schemas, their contents, large objects); returns how many.

    Used before a re-run after a failed copy. Extensions stay: the schema restore recreates
    them only if missing.
    """
    dropped = 0
    with conn.cursor() as cur:
        for _round in range(3):  # CASCADE may already have taken an object: IF EXISTS
            cur.execute(_TARGET_OBJECTS_SQL)
            rows = cur.fetchall()
            if not rows:
                break
            for kind, identity, extra in rows:
                keyword = "DOMAIN" if kind == "type" and extra == "d" else _DROP_KEYWORDS.get(kind)
                if keyword is None:
                    continue
                cur.execute(f"DROP {keyword} IF EXISTS {identity} CASCADE")
                dropped += 1
        cur.execute("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata")
        row = cur.fetchone()
        dropped += int(row[0]) if row else 0
    return dropped


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
