"""An engine-only demo: a real migrate between two throwaway databases, no account needed."""

from __future__ import annotations

from render_rotator.postgres.migrate import MigrateResult, migrate
from render_rotator.sandbox.cluster import Cluster

SAMPLE = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, profile jsonb);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint REFERENCES users(id),
                     total numeric(10,2), placed_at timestamptz DEFAULT now());
CREATE INDEX orders_user_idx ON orders (user_id);
INSERT INTO users (email, profile)
  SELECT 'user' || g || '@example.com', jsonb_build_object('plan', 'free', 'n', g)
  FROM generate_series(1, 1000) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 1000, g % 100 FROM generate_series(1, 4000) g;
"""


def run_engine_demo() -> MigrateResult:
    """Start a throwaway cluster, fill a sample database, migrate it, verify it."""
    with Cluster() as cluster:
        source = cluster.create_database("demo_app")
        cluster.execute(SAMPLE, dbname="demo_app")
        return migrate(
            source,
            cluster.url("demo_app_new"),
            admin_url=cluster.admin_url,
            create_db="demo_app_new",
        )
