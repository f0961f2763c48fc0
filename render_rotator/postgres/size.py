"""The one measure of "bytes copied": the user's data as it sits on disk in a database.

Tables, their TOAST and their indexes in the user's schemas (pg_total_relation_size). The
copy progress polls it on the target while the copy runs, the source's value is the
estimate of the total, and the report shows the target's value measured once when the copy
ends, so the last progress line and the report always agree.
"""

from __future__ import annotations

from typing import Any

from render_rotator.postgres.catalog import USER_SCHEMA

USER_DATA_BYTES_SQL = f"""
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND {USER_SCHEMA}
"""


def user_data_bytes(conn: Any) -> int:
    """Bytes of the user's tables, TOAST and indexes in the database `conn` is on."""
    with conn.cursor() as cur:
        cur.execute(USER_DATA_BYTES_SQL)
        row = cur.fetchone()
    return int(row[0]) if row else 0
