"""The seed's `DatabaseManager`: back up, create, restore — safely.

`DatabaseManager(admin_url, connect_timeout=30, command_timeout=600)` behaves as the seed's
examples show, against real servers: timeouts that hold, no secret on any command line, the
version rule checked before anything runs, a backup read back before it is reported. The
one-call migration (`migrate_database`) is the migrate engine in postgres/migrate.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions
from psycopg2 import sql

from render_rotator.errors import (
    DatabaseExistsError,
    UsageError,
)
from render_rotator.postgres import archive
from render_rotator.postgres.binaries import (
    PgBin,
    rejection,
    resolve_client,
    server_major_from_num,
    url_needs_tls,
)
from render_rotator.postgres.catalog import export_snapshot, import_snapshot, is_superuser
from render_rotator.postgres.clean import target_objects
from render_rotator.postgres.connect import QueryCancel, connect, connection, sql_error
from render_rotator.postgres.fingerprint import Fingerprint, take_fingerprint
from render_rotator.postgres.inventory import (
    Inventory,
    take_inventory_in,
)
from render_rotator.postgres.url import PgURL, parse_url

log = logging.getLogger("render_rotator.postgres")

MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class BackupInfo:
    """A finished, verified backup, and the source's inventory and content fingerprint
    taken in the same snapshot (what a restore of it must compare equal to)."""

    archive: archive.ArchiveInfo
    inventory: Inventory | None
    source: str  # redacted URL
    fingerprint: Fingerprint | None = None

    @property
    def path(self) -> Path:
        return self.archive.path

    @property
    def sha256(self) -> str:
        return self.archive.sha256

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.archive.path),
            "format": self.archive.format,
            "size_bytes": self.archive.size_bytes,
            "sha256": self.archive.sha256,
            "toc_entries": self.archive.toc_entries,
            "pg_dump_version": self.archive.pg_dump_version,
            "source": self.source,
            "inventory": self.inventory.to_dict() if self.inventory else None,
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
        }


def validate_database_name(name: str) -> None:
    """PostgreSQL's own limits, checked before anything is sent to a server."""
    if not isinstance(name, str) or not name:
        raise UsageError("database name is empty", hint="give a name such as myapp_db")
    if "\x00" in name:
        raise UsageError("database name contains a NUL byte", hint="choose another name")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise UsageError(
            f"database name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes",
            hint="PostgreSQL would truncate it silently; choose a shorter name",
        )


class DatabaseManager:
    """Back up, create and restore PostgreSQL databases (the seed's API)."""

    def __init__(
        self,
        admin_url: str | None = None,
        connect_timeout: float = 30,
        command_timeout: float = 600,
        *,
        pg_bin: str | Path | None = None,
        jobs: int = 1,
        lock_wait_timeout: float | None = None,
    ) -> None:
        if connect_timeout <= 0 or command_timeout <= 0:
            raise UsageError("timeouts must be positive numbers of seconds")
        self.admin_url = parse_url(admin_url) if admin_url else None
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.pg_bin = pg_bin
        self.jobs = max(1, int(jobs))
        # pg_dump gives up waiting for a table lock after this long (default: command_timeout)
        self.lock_wait_timeout = lock_wait_timeout
        self._client: PgBin | None = None
        # databases this manager created and has not yet handed to the user restoring into
        # them: created by the admin, they belong to the admin until then
        self._created: set[str] = set()

    def __repr__(self) -> str:
        admin = self.admin_url.redacted() if self.admin_url else None
        return (
            f"DatabaseManager(admin_url={admin!r}, connect_timeout={self.connect_timeout:g}, "
            f"command_timeout={self.command_timeout:g})"
        )

    # -- helpers ------------------------------------------------------------------------

    @property
    def client(self) -> PgBin:
        """The pg_dump/pg_restore directory in use (resolved once)."""
        if self._client is None:
            self._client = resolve_client(self.pg_bin)
        return self._client

    def connect(
        self, url: str | PgURL, *, autocommit: bool = True
    ) -> psycopg2.extensions.connection:
        return connect(
            url,
            connect_timeout=self.connect_timeout,
            statement_timeout=self.command_timeout,
            autocommit=autocommit,
        )

    def check_version(self, conn: psycopg2.extensions.connection, url: PgURL | None = None) -> int:
        """Choose the client by rule for this server (and URL); returns the server's major."""
        major = server_major_from_num(int(conn.server_version))
        self.use_client_for(url, major)
        return major

    def use_client_for(self, url: PgURL | None, server_major: int | None = None) -> PgBin:
        """Keep the current client if it fits `url` and the server, else pick one that does."""
        needs_tls = url is not None and url_needs_tls(url.host, url.sslmode)
        current = self.client
        if rejection(current, server_major=server_major, needs_tls=needs_tls) is None:
            return current
        # an explicit choice (pg_bin, RENDER_ROTATOR_PG_BIN) is never silently replaced:
        # resolving it again explains why it does not fit
        self._client = resolve_client(self.pg_bin, server_major=server_major, needs_tls=needs_tls)
        return self._client

    @contextlib.contextmanager
    def exported_snapshot(
        self, url: PgURL, *, imported: str | None = None
    ) -> Iterator[tuple[psycopg2.extensions.connection, str]]:
        """A REPEATABLE READ transaction whose snapshot other sessions (pg_dump) can share.

        `imported`: another session's exported snapshot to take instead of a new one; it is
        exported again from here, so the sessions sharing it depend on this transaction only.
        """
        conn = self.connect(url, autocommit=False)
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                if imported:
                    try:
                        import_snapshot(cur, imported)
                    except psycopg2.Error as exc:
                        raise sql_error(url, exc) from None
                snapshot = export_snapshot(cur)
            yield conn, snapshot
        finally:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
            conn.close()

    @contextlib.contextmanager
    def cursor(self, url: str | PgURL) -> Iterator[psycopg2.extensions.cursor]:
        """An autocommit cursor with this manager's connect and statement timeouts."""
        with (
            connection(
                url, connect_timeout=self.connect_timeout, statement_timeout=self.command_timeout
            ) as conn,
            conn.cursor() as cur,
        ):
            yield cur

    # -- the seed's API -------------------------------------------------------------------

    def backup_database(
        self,
        source_url: str,
        backup_file: str | Path,
        *,
        inventory: bool = True,
        archive_format: str = "custom",
        jobs: int | None = None,
        compress: str | None = None,
        verify_mode: str = "content",
        snapshot: str | None = None,
        cancel: QueryCancel | None = None,
    ) -> BackupInfo:
        """pg_dump the source (custom format) to `backup_file`, read it back and hash it.

        The source's content fingerprint (`verify_mode`) and inventory are taken in the very
        snapshot pg_dump uses, while it runs, so they describe exactly what the archive holds.
        `snapshot`: an exported snapshot of the source to back up (say, the one a copy
        beside this backup reads); its exporter must stay open until this call has started
        its own transaction. `cancel`: set it from another thread to stop the backup (its
        pg_dump and its fingerprint); the partial archive is removed.
        """
        source = parse_url(source_url)
        path = Path(backup_file)
        archive.check_writable_destination(path)
        # an interrupted or failed dump stops the fingerprint's queries too: the pool's exit
        # would otherwise wait for one blocked on a lock until its timeout
        cancel = cancel if cancel is not None else QueryCancel()
        with (
            self.exported_snapshot(source, imported=snapshot) as (conn, snapshot),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint") as pool,
            cancel.on_failure(),
        ):
            self.check_version(conn, source)
            taking = (
                pool.submit(
                    take_fingerprint,
                    source,
                    snapshot=snapshot,
                    jobs=self.jobs,
                    mode=verify_mode,
                    connect_timeout=self.connect_timeout,
                    statement_timeout=self.command_timeout,
                    cancel=cancel,
                )
                if inventory
                else None
            )
            info = archive.dump(
                self.client,
                source,
                path,
                timeout=self.command_timeout,
                connect_timeout=self.connect_timeout,
                lock_wait_timeout=self.lock_wait_timeout,
                archive_format=archive_format,
                jobs=jobs or (self.jobs if archive_format == "directory" else 1),
                compress=compress,
                snapshot=snapshot,
                stop=cancel,
            )
            fp = taking.result() if taking is not None else None
            inv = take_inventory_in(conn, rows=fp.row_counts) if fp is not None else None
        return BackupInfo(archive=info, inventory=inv, source=source.redacted(), fingerprint=fp)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """CREATE DATABASE through the admin connection; the name is always quoted.

        `owner` makes another role its owner at once. Without it, the first
        `restore_database` into it as another (application) user hands it to that user: on
        PostgreSQL 15+ only a database's owner may create objects in its public schema.
        """
        validate_database_name(name)
        if self.admin_url is None:
            raise UsageError(
                "create_database needs an admin connection",
                hint="pass admin_url (or --admin-url) with a role allowed to create databases",
            )
        with self.cursor(self.admin_url) as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                raise DatabaseExistsError(
                    f"database {name!r} already exists on "
                    f"{self.admin_url.host}:{self.admin_url.port}",
                    hint="choose another name or drop it first; nothing was changed",
                )
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if owner:
                stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
            cur.execute(stmt)
        if not owner or owner == self.admin_url.user:
            self._created.add(name)
        log.info("created database %r%s", name, f" owned by {owner!r}" if owner else "")

    def owner_for(self, target: PgURL) -> str | None:
        """The role a new database for `target` should belong to: the target URL's user
        when it is not the admin's (None: the admin keeps it)."""
        if self.admin_url is None or not target.user or target.user == self.admin_url.user:
            return None
        return target.user

    def _hand_over(self, target: PgURL) -> None:
        """Give a database this manager created to the user about to restore into it."""
        owner = self.owner_for(target)
        if target.dbname not in self._created or owner is None or self.admin_url is None:
            return
        with self.cursor(self.admin_url) as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
            if cur.fetchone() is None:
                return  # another server's role: the restore says what is wrong
            cur.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(target.dbname), sql.Identifier(owner)
                )
            )
        self._created.discard(target.dbname)
        log.info("database %r now belongs to %r, who restores into it", target.dbname, owner)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE (used to undo our own create after a failed migration)."""
        validate_database_name(name)
        if self.admin_url is None:
            raise UsageError("drop_database needs an admin connection")
        with self.cursor(self.admin_url) as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        log.info("dropped database %r", name)

    def restore_database(
        self,
        target_url: str,
        backup_file: str | Path,
        *,
        jobs: int | None = None,
        require_empty: bool = True,
    ) -> archive.RestoreResult:
        """pg_restore into the target with --no-owner --no-privileges; never ignores errors.

        A target holding objects is refused before anything runs (`require_empty=False`
        leaves that to a caller that verifies the result against the source anyway).
        """
        target = parse_url(target_url)
        path = Path(backup_file)
        if not path.exists():
            raise UsageError(f"backup file {path} does not exist", hint="check the path")
        self._hand_over(target)
        with self.cursor(target) as cur:
            superuser = is_superuser(cur.connection)
            leftovers = target_objects(cur.connection) if require_empty else []
        if leftovers:
            shown = ", ".join(leftovers[:3]) + (", ..." if len(leftovers) > 3 else "")
            raise UsageError(
                f"the target {target.redacted()} is not empty ({len(leftovers)} objects: "
                f"{shown}); a restore needs an empty database",
                hint="restore into a new database (create_database / --create-db)",
            )
        self.use_client_for(target)
        result = archive.restore(
            self.client,
            target,
            path,
            timeout=self.command_timeout,
            connect_timeout=self.connect_timeout,
            superuser=superuser,
            jobs=jobs or (self.jobs if path.is_dir() else 1),
        )
        self.analyze(target)
        return result

    def analyze(self, url: str | PgURL) -> None:
        """Fresh planner statistics, so the app is fast right after cutover."""
        with self.cursor(url) as cur:
            cur.execute("ANALYZE")
