"""Real databases behind the records: one cluster per major, roles, logins and allow lists.

The emulator's records say what Render would answer; `Provisioner` makes the databases they
describe exist on real servers (`Cluster` does the SQL), so restores meet Render's permission
limits and a suspended or shut-out database really refuses logins.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
import uuid

import psycopg2

from render_rotator.sandbox.cluster import Cluster, server_bins
from render_rotator.sandbox.emulator.http import EmulatorAPIError, bad_request
from render_rotator.sandbox.emulator.records import POSTGRES_VERSIONS, Postgres

log = logging.getLogger("render_rotator.sandbox.emulator")


class Provisioner:
    """Databases on `cluster` (its own major) and on clusters of other majors started on
    first use and stopped by `stop`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._clusters: dict[int, Cluster] = {cluster.major: cluster}
        self._started: list[Cluster] = []
        self._lock = threading.Lock()
        # per cluster (by data directory): roles whose allow list shuts this machine out
        self._shut_out: dict[str, tuple[Cluster, set[str]]] = {}
        self._hba_tag = f"render-emulator {uuid.uuid4().hex[:12]}"

    # -- clusters: one per major ---------------------------------------------------------------

    def servable_versions(self) -> list[str]:
        """The majors this sandbox can provision: running clusters and installed servers."""
        majors = set(self._clusters) | set(server_bins())
        return [v for v in POSTGRES_VERSIONS if int(v) in majors]

    def cluster_for_version(self, version: str) -> Cluster:
        """The running cluster of `version`, started now if needed; 400 if none can be."""
        major = int(version)
        with self._lock:
            cluster = self._clusters.get(major)
            if cluster is not None:
                return cluster
            if major not in server_bins():
                raise bad_request(
                    f'version "{version}" is not available in this sandbox: it serves '
                    + ", ".join(self.servable_versions())
                    + " (install that PostgreSQL server to add it)"
                )
            cluster = Cluster(major, tls=True)
            try:
                cluster.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    cluster.stop()
                log.error("starting a PostgreSQL %s cluster failed: %s", major, exc)
                raise EmulatorAPIError(500, "failed to provision the database") from exc
            self._clusters[major] = cluster
            self._started.append(cluster)
            return cluster

    def cluster_of(self, pg: Postgres) -> Cluster:
        with self._lock:
            return self._clusters.get(pg.major, self.cluster)

    def stop(self) -> None:
        """Lift this emulator's pg_hba.conf blocks; stop the clusters it started."""
        with self._lock:
            shut_out, self._shut_out = list(self._shut_out.values()), {}
        for cluster, users in shut_out:
            if users:
                with contextlib.suppress(Exception):
                    cluster.reject_over_tcp(self._hba_tag, [])
        with self._lock:
            started, self._started = self._started, []
            for cluster in started:
                self._clusters.pop(cluster.major, None)
        for cluster in started:
            with contextlib.suppress(Exception):
                cluster.stop()

    # -- databases -----------------------------------------------------------------------------

    def create(self, pg: Postgres) -> None:
        """The role and the database, as Render provisions them."""
        self.cluster_of(pg).create_owned_database(pg.database_name, pg.database_user, pg.password)

    def drop(self, pg: Postgres) -> None:
        self.cluster_of(pg).drop_owned_database(pg.database_name, pg.database_user)

    def set_login(self, pg: Postgres, allowed: bool) -> None:
        self.cluster_of(pg).set_login(pg.database_name, pg.database_user, allowed)

    def run_as_owner(self, pg: Postgres, statements: str) -> None:
        """Run SQL in the database as its own (non-superuser) role."""
        cluster = self.cluster_of(pg)
        conn = psycopg2.connect(
            host=cluster.host,
            port=cluster.port,
            dbname=pg.database_name,
            user=pg.database_user,
            password=pg.password,
            connect_timeout=10,
        )
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statements)
        finally:
            conn.close()

    # -- the IP allow list ---------------------------------------------------------------------

    def admits_this_machine(self, pg: Postgres) -> bool:
        """Whether `pg`'s allow list admits connections from this machine (they come from the
        address of the external URL). Empty admits no one from outside Render."""
        here = ipaddress.ip_address(self.cluster_of(pg).host)
        for entry in pg.ip_allow_list:
            net = ipaddress.ip_network(entry["cidrBlock"], strict=False)
            if net.version == here.version and here in net:
                return True
        return False

    def apply_allow_list(self, pg: Postgres, *, dropped: bool = False) -> None:
        """Make the server refuse `pg`'s role over TCP, the external URL's way in, while its
        allow list shuts this machine out, and admit it again when the list allows it. The
        internal URL (the Unix socket, the sandbox's private network) is not affected, as on
        Render."""
        shut = not dropped and not self.admits_this_machine(pg)
        cluster = self.cluster_of(pg)
        key = str(cluster.data_dir)
        with self._lock:
            users = self._shut_out.setdefault(key, (cluster, set()))[1]
            if (pg.database_user in users) == shut:
                return
            if shut:
                users.add(pg.database_user)
            else:
                users.discard(pg.database_user)
            listed = sorted(users)
        cluster.reject_over_tcp(self._hba_tag, listed)
        if not dropped:
            self._await_hba(pg, shut)

    def _await_hba(self, pg: Postgres, shut: bool, timeout: float = 10.0) -> None:
        """A reload takes effect a moment later: poll the server until a login shows the new
        rule (real time: this waits on PostgreSQL, not on the emulator's clock)."""
        cluster = self.cluster_of(pg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = psycopg2.connect(
                    host=cluster.host,
                    port=cluster.port,
                    dbname=pg.database_name,
                    user=pg.database_user,
                    password=pg.password,
                    sslmode="require",
                    connect_timeout=5,
                )
            except psycopg2.OperationalError as exc:
                rejected = "pg_hba.conf rejects" in str(exc)
            else:
                conn.close()
                rejected = False
            if rejected == shut:
                return
            time.sleep(0.02)
        raise EmulatorAPIError(500, "the allow list did not take effect")
