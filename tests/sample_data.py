"""A small but varied schema that exercises what a real app database holds."""

from __future__ import annotations

import secrets
import uuid

import pytest

from render_rotator.postgres import fingerprint
from render_rotator.sandbox.cluster import Cluster

RICH_SCHEMA = """
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    profile jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX customers_profile_gin ON customers USING gin (profile);
CREATE SEQUENCE invoice_number_seq START 1000;
CREATE TABLE audit_log (at timestamptz DEFAULT now(), message text);
CREATE VIEW big_spenders AS
    SELECT c.email, sum(o.total) AS spent FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.email;
CREATE FUNCTION order_count(cid bigint) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM orders WHERE customer_id = cid $$;
INSERT INTO customers (email, profile)
    SELECT 'user' || g || '@example.com',
           jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7))
    FROM generate_series(1, 500) g;
INSERT INTO orders (customer_id, total)
    SELECT 1 + (g % 500), (g % 97) * 1.5 FROM generate_series(1, 1500) g;
INSERT INTO audit_log (message) SELECT 'event ' || g FROM generate_series(1, 50) g;
SELECT nextval('invoice_number_seq') FROM generate_series(1, 42);
"""


def make_rich_database(cluster: Cluster, dbname: str, *, owner_role: str | None = None) -> str:
    """Create `dbname` holding RICH_SCHEMA (plus a table owned by `owner_role`); returns its URL."""
    url = cluster.create_database(dbname)
    cluster.execute(RICH_SCHEMA, dbname=dbname)
    if owner_role:
        exists = cluster.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner_role}'")
        if not exists:
            cluster.create_role(owner_role, secrets.token_hex(8))
        cluster.execute(
            f"CREATE TABLE owned_by_app (id int PRIMARY KEY, note text);"
            f"INSERT INTO owned_by_app SELECT g, 'n' || g FROM generate_series(1, 10) g;"
            f'ALTER TABLE owned_by_app OWNER TO "{owner_role}";'
            f'GRANT SELECT ON customers TO "{owner_role}";',
            dbname=dbname,
        )
    return url


# A table large enough for key ranges once fingerprint.CHUNK_BYTES is lowered to 64 kB
# (`ranged_sums`): 20000 rows of about 200 bytes, keyed 1..20000, with statistics.
RANGED_TABLE = (
    "CREATE TABLE big (id bigint PRIMARY KEY, body text);"
    "INSERT INTO big SELECT g, repeat('b', 200) FROM generate_series(1, 20000) g;"
    "ANALYZE big;"
)


def ranged_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fingerprints sum tables of a few hundred kB by key range (RANGED_TABLE has several)."""
    monkeypatch.setattr(fingerprint, "CHUNK_BYTES", 64 << 10)


def unique_name(prefix: str = "t") -> str:
    """A database/role name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
