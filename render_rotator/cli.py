"""The `render-rotator` command line: each command is a thin shell over one library call.

Errors become one clear line on stderr and an exit code: 0 done or nothing due, 1 failed,
2 usage or configuration error, 3 verification mismatch. With `--json`, stdout carries
exactly one JSON object (also on failure) and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from render_rotator import __version__, faults, github, secrets, stopping
from render_rotator.config import MAX_JOBS, MAX_SECONDS
from render_rotator.errors import RenderRotatorError, UsageError, VerificationError
from render_rotator.logs import setup_logging
from render_rotator.postgres.url import PgURL
from render_rotator.secrets import scrub

log = logging.getLogger("render_rotator")
F = TypeVar("F", bound=Callable[..., Any])


class Output:
    """Where a command's result goes: one JSON object, or lines for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: dict[str, Any], lines: list[str]) -> None:
        if self.as_json:
            click.echo(scrub(json.dumps(data, indent=2, default=str)))
        else:
            for line in lines:
                click.echo(scrub(line))

    def error(self, exc: BaseException, exit_code: int) -> None:
        message = scrub(str(exc))
        click.echo(f"error: {message}", err=True)
        if self.as_json:
            payload = {"ok": False, "exit_code": exit_code, "error": message}
            differences = getattr(exc, "differences", None)
            if differences:
                payload["differences"] = differences
            click.echo(json.dumps(payload, indent=2))


class _Seconds(click.ParamType):
    """Seconds from 1 to a week: NaN, infinities and 1e300 are refused with the range."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 1 <= seconds <= MAX_SECONDS):
            self.fail(f"{value} is not between 1 and {MAX_SECONDS} seconds (a week)", param, ctx)
        return seconds


SECONDS = _Seconds()
JOBS = click.IntRange(min=1, max=MAX_JOBS)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Signals interrupt the command, even while a query waits on the server: psycopg2 then
    waits in Python (select), where a signal raises at once and the query is cancelled,
    instead of inside libpq, where it would wait for the statement to end. (The `cli`
    group has routed SIGTERM and SIGHUP into `stopping.Terminated`.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (e.g. a test runner's thread)
        return
    import psycopg2.extensions

    from render_rotator.postgres.connect import wait_interruptible

    previous_wait = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(wait_interruptible)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(previous_wait)


def handle_errors[F: Callable[..., Any]](func: F) -> F:
    """Turn our exceptions into one line + the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(bool(kwargs.get("as_json")))
        try:
            with _signals_interrupt():
                return func(*args, **kwargs)
        except RenderRotatorError as exc:
            github.annotate("error", scrub(str(exc)), title="render-rotator")
            out.error(exc, exc.exit_code)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # stdout's reader left (`status | head -1`): click exits quietly (code 1)
            raise
        except KeyboardInterrupt as exc:
            # a rotation says where it stopped and how to finish; anything else just stops
            message = getattr(exc, "message", None) or stopping.describe(exc)
            out.error(RuntimeError(message), RenderRotatorError.exit_code)
            sys.exit(RenderRotatorError.exit_code)
        except Exception as exc:  # noqa: BLE001 - anything else: one line, traceback with -v
            error = faults.as_error(exc)  # logs the traceback at debug level (-v)
            github.annotate("error", scrub(str(error)), title="render-rotator")
            out.error(error, error.exit_code)
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def json_option[F: Callable[..., Any]](func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else."
    )(func)


def timeout_options[F: Callable[..., Any]](func: F) -> F:
    func = click.option(
        "--command-timeout",
        type=SECONDS,
        default=600,
        show_default=True,
        help="Seconds any pg_dump/pg_restore/SQL statement may run before it is stopped.",
    )(func)
    func = click.option(
        "--connect-timeout",
        type=SECONDS,
        default=30,
        show_default=True,
        help="Seconds to keep trying to connect (transient failures are retried).",
    )(func)
    return pg_bin_option(func)


def pg_bin_option[F: Callable[..., Any]](func: F) -> F:
    return click.option(
        "--pg-bin",
        type=click.Path(file_okay=False),
        envvar="RENDER_ROTATOR_PG_BIN",
        help="Directory holding pg_dump/pg_restore (default: the newest found). "
        "Env: RENDER_ROTATOR_PG_BIN.",
    )(func)


def url_argument(name: str, envvar: str) -> Callable[[F], F]:
    """A URL argument that may come from an env var, keeping the password off argv."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = PgURL.parse(value)
        except RenderRotatorError as exc:
            raise click.BadParameter(str(exc)) from None
        secrets.register(parsed.password)
        source = ctx.get_parameter_source(param.name or "")
        if parsed.password and source == click.core.ParameterSource.COMMANDLINE:
            log.warning(
                "the %s password is on the command line, visible to other local users; "
                "set %s instead",
                param.human_readable_name,
                envvar,
            )
        return value

    return click.argument(name, envvar=envvar, callback=callback)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="render-rotator")
@click.option("-v", "--verbose", count=True, help="More detail (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Rotate Render's expiring free PostgreSQL databases without losing a row.

    URLs with passwords can be given through the environment (RENDER_ROTATOR_SOURCE_URL,
    RENDER_ROTATOR_TARGET_URL, RENDER_ROTATOR_ADMIN_URL) to keep them off the process list.
    """
    ctx.ensure_object(dict)
    ctx.call_on_close(stopping.install())  # SIGTERM/SIGHUP clean up like Ctrl-C
    ctx.obj["verbosity"] = -1 if quiet else verbose
    setup_logging(ctx.obj["verbosity"])
    github.install()


def _manager(
    admin_url: str | None,
    connect_timeout: float,
    command_timeout: float,
    pg_bin: str | None,
    jobs: int = 1,
) -> Any:
    from render_rotator.postgres.manager import DatabaseManager

    return DatabaseManager(
        admin_url,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        pg_bin=pg_bin,
        jobs=jobs,
    )


def _report_lines(report: Any) -> list[str]:
    lines = [report.summary()]
    lines += [f"  - {d}" for d in report.differences]
    return lines


@cli.command()
@url_argument("source_url", "RENDER_ROTATOR_SOURCE_URL")
@url_argument("target_url", "RENDER_ROTATOR_TARGET_URL")
@click.option(
    "--admin-url",
    envvar="RENDER_ROTATOR_ADMIN_URL",
    help="Connection allowed to CREATE DATABASE (with --create-db). Env: RENDER_ROTATOR_ADMIN_URL.",
)
@click.option("--create-db", "create_db", help="Create this database first (needs --admin-url).")
@click.option(
    "--jobs",
    type=JOBS,
    default=2,
    show_default=True,
    help="Parallel workers for the copy.",
)
@click.option("--no-verify", is_flag=True, help="Skip the comparison with the source.")
@click.option(
    "--verify",
    "verify_mode",
    type=click.Choice(["content", "counts"]),
    default="content",
    show_default=True,
    help="content: every row by checksum, sequences, definitions, settings, large objects; "
    "counts: row counts only (weaker).",
)
@click.option(
    "--clean",
    is_flag=True,
    help="First drop every user object already in the target (say, a partial copy left by "
    "a failed run). Without it, a target that is not empty is refused.",
)
@timeout_options
@json_option
@handle_errors
def migrate(
    source_url: str,
    target_url: str,
    admin_url: str | None,
    create_db: str | None,
    jobs: int,
    no_verify: bool,
    verify_mode: str,
    clean: bool,
    connect_timeout: float,
    command_timeout: float,
    pg_bin: str | None,
    as_json: bool,
) -> None:
    """Copy SOURCE_URL into TARGET_URL and prove the copy complete (no Render needed)."""
    from render_rotator.postgres.migrate import migrate as migrate_fn

    result = migrate_fn(
        source_url,
        target_url,
        admin_url=admin_url,
        create_db=create_db,
        jobs=jobs,
        verify=not no_verify,
        verify_mode=verify_mode,
        clean=clean,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        pg_bin=pg_bin,
    )
    data = result.to_dict()
    lines = [
        f"migrated {data['source']} -> {data['target']} in {result.seconds:.1f}s ({result.method})"
    ]
    if result.report is not None:
        lines += _report_lines(result.report)
    Output(as_json).result({"ok": True, **data}, lines)


def url_and_file_arguments(url_name: str, envvar: str) -> Callable[[F], F]:
    """`URL FILE`, or just `FILE` with the URL in `envvar`, so no password need go on the
    command line (as `migrate` takes its URLs)."""

    def decorate(func: F) -> F:
        func = click.argument("file", required=False, metavar="FILE")(func)
        return click.argument("first", required=False, metavar=f"[{url_name.upper()}]")(func)

    return decorate


def _url_and_file(first: str | None, file: str | None, name: str, envvar: str) -> tuple[str, Path]:
    """Which argument is the URL and which the file (see `url_and_file_arguments`)."""
    if first is None:
        raise UsageError("missing FILE", hint="give the archive path as the last argument")
    if file is None:
        file, url, source = first, os.environ.get(envvar, "").strip() or None, "env"
        if url is None:
            raise UsageError(
                f"no {name}: it is neither given nor in {envvar}",
                hint=f"export {envvar}=postgresql://... (keeps the password off the "
                f"command line), or give it before FILE",
            )
    else:
        url, source = first, "argument"
    if file.lower().startswith(("postgres://", "postgresql://")):
        with contextlib.suppress(RenderRotatorError):
            secrets.register(PgURL.parse(file).password)
        raise UsageError(
            f"FILE {secrets.scrub(file)} is a connection URL, not a file path",
            hint=f"give the archive path as the last argument ({envvar} holds the URL)"
            if source == "env"
            else "give the URL first, then the archive path",
        )
    try:
        parsed = PgURL.parse(url)
    except RenderRotatorError as exc:
        raise UsageError(
            f"{name} ({'from ' + envvar if source == 'env' else 'argument'}): {exc}"
        ) from None
    secrets.register(parsed.password)
    if parsed.password and source == "argument":
        log.warning(
            "the %s password is on the command line, visible to other local users; set %s instead",
            name,
            envvar,
        )
    return url, Path(file)


@cli.command()
@url_and_file_arguments("source_url", "RENDER_ROTATOR_SOURCE_URL")
@click.option(
    "--format",
    "archive_format",
    type=click.Choice(["custom", "directory"]),
    default="custom",
    show_default=True,
    help="pg_dump archive format (directory allows parallel dump and restore).",
)
@click.option(
    "--jobs",
    type=JOBS,
    default=1,
    show_default=True,
    help="Parallel dump workers (directory format only).",
)
@timeout_options
@json_option
@handle_errors
def backup(
    first: str | None,
    file: str | None,
    archive_format: str,
    jobs: int,
    connect_timeout: float,
    command_timeout: float,
    pg_bin: str | None,
    as_json: bool,
) -> None:
    """Dump SOURCE_URL to FILE, read it back, and print its sha256 and inventory.

    SOURCE_URL may be left out when RENDER_ROTATOR_SOURCE_URL holds it.
    """
    source_url, path = _url_and_file(first, file, "source URL", "RENDER_ROTATOR_SOURCE_URL")
    if jobs > 1 and archive_format != "directory":
        raise UsageError("--jobs needs --format directory", hint="pg_dump parallelizes only that")
    manager = _manager(None, connect_timeout, command_timeout, pg_bin, jobs)
    info = manager.backup_database(source_url, path, archive_format=archive_format, jobs=jobs)
    inv = info.inventory
    lines = [
        f"backup written: {info.path}",
        f"  size {info.archive.size_bytes} bytes, sha256 {info.sha256}",
    ]
    if inv is not None:
        lines.append(f"  {len(inv.tables)} tables, {inv.total_rows} rows")
    Output(as_json).result({"ok": True, **info.to_dict()}, lines)


@cli.command()
@url_and_file_arguments("target_url", "RENDER_ROTATOR_TARGET_URL")
@click.option(
    "--jobs",
    type=JOBS,
    default=1,
    show_default=True,
    help="Parallel restore workers (directory archives).",
)
@timeout_options
@json_option
@handle_errors
def restore(
    first: str | None,
    file: str | None,
    jobs: int,
    connect_timeout: float,
    command_timeout: float,
    pg_bin: str | None,
    as_json: bool,
) -> None:
    """Restore FILE into TARGET_URL with --no-owner --no-privileges, then ANALYZE.

    TARGET_URL may be left out when RENDER_ROTATOR_TARGET_URL holds it.
    """
    target_url, path = _url_and_file(first, file, "target URL", "RENDER_ROTATOR_TARGET_URL")
    manager = _manager(None, connect_timeout, command_timeout, pg_bin, jobs)
    result = manager.restore_database(target_url, path, jobs=jobs)
    lines = [f"restored {path} into {PgURL.parse(target_url).redacted()} in {result.seconds:.1f}s"]
    lines += [f"  skipped (needs a superuser, holds no data): {s}" for s in result.skipped]
    Output(as_json).result(
        {
            "ok": True,
            "file": str(path),
            "target": PgURL.parse(target_url).redacted(),
            "seconds": round(result.seconds, 3),
            "skipped": result.skipped,
        },
        lines,
    )


@cli.command()
@url_argument("source_url", "RENDER_ROTATOR_SOURCE_URL")
@url_argument("target_url", "RENDER_ROTATOR_TARGET_URL")
@click.option(
    "--connect-timeout",
    type=SECONDS,
    default=30,
    show_default=True,
    help="Seconds to keep trying to connect.",
)
@click.option(
    "--command-timeout",
    type=SECONDS,
    default=600,
    show_default=True,
    help="Seconds any statement may run.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Parallel sessions on each side.",
)
@click.option(
    "--mode",
    type=click.Choice(["content", "counts"]),
    default="content",
    show_default=True,
    help="content: rows by checksum; counts: row counts only (weaker).",
)
@json_option
@handle_errors
def verify(
    source_url: str,
    target_url: str,
    connect_timeout: float,
    command_timeout: float,
    jobs: int,
    mode: str,
    as_json: bool,
) -> None:
    """Prove TARGET_URL holds exactly what SOURCE_URL holds, by content.

    Compares every table's rows (a checksum per table, computed on each server; large
    tables per primary key range, so a difference names where), sequences (last_value,
    is_called), object definitions (columns, types, defaults, constraints, indexes, views,
    functions, triggers, policies, comments, extensions), the database's own settings
    (ALTER DATABASE ... SET) and large objects' contents. --mode counts compares row
    counts instead of checksums: faster, but blind to changed values.

    Exits 3 when they differ, naming each difference.
    """
    from render_rotator.postgres.inventory import verify_copy

    report = verify_copy(
        source_url,
        target_url,
        jobs=jobs,
        mode=mode,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
    )
    Output(as_json).result({"ok": report.equal, **report.to_dict()}, _report_lines(report))
    if not report.equal:
        sys.exit(VerificationError.exit_code)


class _DaysOrConfig(click.ParamType):
    """Days (>= 0), or "config" (a bare --if-expiring-within: each database's own
    rotate_within_days)."""

    name = "days"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "config" or (isinstance(value, int) and value >= 0):
            return value
        try:
            days = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number of days", param, ctx)
        if days < 0:
            self.fail(f"{days} is negative", param, ctx)
        return days


def config_option[F: Callable[..., Any]](func: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="RENDER_ROTATOR_CONFIG",
        help="Config file (default: render-rotator.toml). Env: RENDER_ROTATOR_CONFIG.",
    )(func)


def backup_option[F: Callable[..., Any]](func: F) -> F:
    return click.option(
        "--backup",
        "backup",
        type=click.Path(path_type=Path),
        help="Backup to finish an interrupted delete-first rotation from, when its old "
        "database is gone and the journal is lost: the archive (with its .json manifest "
        "beside it), the manifest, or a directory holding them (default: search backup_dir).",
    )(func)


def _make_ui(as_json: bool) -> Any:
    """Progress and report display: terminal, GitHub Actions, or plain lines."""
    from render_rotator.ui import make_ui

    verbosity = click.get_current_context().find_root().obj.get("verbosity", 0)
    return make_ui(as_json=as_json, quiet=verbosity < 0, verbose=max(0, verbosity))


def _emit_rotation(result: Any, as_json: bool, ui: Any = None) -> None:
    """Print a rotation's result (the library has already published and notified); exit."""
    from render_rotator.ui import report_lines

    data = result.to_dict()
    if as_json or ui is None:
        Output(as_json).result(data, report_lines(data))
    else:
        ui.final_report(data)
    if result.exit_code:
        for report in result.reports:
            if not report.ok:
                click.echo(f"error: {scrub(report.message)}", err=True)
        sys.exit(result.exit_code)


@cli.command()
@config_option
@click.option("--database", help="Rotate only this configured database (name or id).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--if-expiring-within",
    "if_expiring_within",
    type=_DaysOrConfig(),
    is_flag=False,
    flag_value="config",
    default=None,
    metavar="[DAYS]",
    help="Do nothing (exit 0) unless the database expires within DAYS days "
    "(default DAYS: rotate_within_days from the config). Safe to run daily.",
)
@click.option("--yes", is_flag=True, help="Do not ask before deleting the old database.")
@click.option("--restart", is_flag=True, help="Discard an unfinished journal and start over.")
@backup_option
@click.option(
    "--rescue",
    is_flag=True,
    help="An expired free database (suspended by Render, deleted 14 days later) is upgraded "
    "to the cheapest paid plan (basic_256mb) to regain access, rotated into a new free one, "
    "then deleted. Costs cents, so only on request. A database that has not expired is "
    "rotated as usual.",
)
@pg_bin_option
@json_option
@handle_errors
def rotate(
    config_path: Path | None,
    database: str | None,
    dry_run: bool,
    if_expiring_within: int | str | None,
    yes: bool,
    restart: bool,
    backup: Path | None,
    rescue: bool,
    pg_bin: str | None,
    as_json: bool,
) -> None:
    """Replace an expiring Render Postgres with a new one and move every service over.

    A free database that has already expired cannot be read: rotate stops and explains the
    way out (--rescue, or restoring a backup from backup_dir).
    """
    from render_rotator.rotation.workflow import rotate as rotate_fn

    with _make_ui(as_json) as ui:
        result = rotate_fn(
            config_path,
            database,
            dry_run=dry_run,
            if_expiring_within=if_expiring_within,
            yes=yes,
            restart=restart,
            pg_bin=pg_bin,
            ui=ui,
            backup=backup,
            rescue=rescue,
        )
    _emit_rotation(result, as_json, ui)


@cli.command()
@config_option
@click.option("--database", help="Resume only this configured database.")
@backup_option
@pg_bin_option
@json_option
@handle_errors
def resume(
    config_path: Path | None,
    database: str | None,
    backup: Path | None,
    pg_bin: str | None,
    as_json: bool,
) -> None:
    """Continue an interrupted rotation from its journal."""
    from render_rotator.rotation.workflow import resume as resume_fn

    with _make_ui(as_json) as ui:
        result = resume_fn(config_path, database, pg_bin=pg_bin, ui=ui, backup=backup)
    _emit_rotation(result, as_json, ui)


@cli.command()
@config_option
@click.option("--database", help="Only this configured database.")
@json_option
@handle_errors
def status(config_path: Path | None, database: str | None, as_json: bool) -> None:
    """List configured databases: status, version, plan, expiry, days left, targets."""
    from render_rotator.config import load_config
    from render_rotator.rotation.status import status as status_fn
    from render_rotator.rotation.status import status_lines

    data = status_fn(load_config(config_path), database)
    missing = [e["name"] for e in data["databases"] if e.get("id") is None]
    data["ok"] = not missing
    github.publish_status(data)
    Output(as_json).result(data, status_lines(data))
    if missing:
        click.echo(
            f"error: not found on Render: {', '.join(missing)}. Check the name (or id) in the "
            "config and that RENDER_API_KEY belongs to its workspace",
            err=True,
        )
        sys.exit(UsageError.exit_code)


@cli.command()
@click.option(
    "--rows",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Rows of sample app data.",
)
@json_option
@handle_errors
def demo(rows: int, as_json: bool) -> None:
    """A full rotation on the local sandbox; needs no account and no network."""
    from render_rotator.sandbox.demo import run_demo

    with _make_ui(as_json) as ui:
        result = run_demo(rows=rows, ui=ui)
    _emit_rotation(result, as_json, ui)


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=0,
    help="Port on 127.0.0.1 (default: a free one).",
)
@click.option(
    "--api-key",
    help="Key the emulator requires (default: a random one). Never taken from RENDER_API_KEY, "
    "which may hold a real Render key that the sandbox would print.",
)
@click.option("--seed", is_flag=True, help="Add the demo's owner, database and service.")
@handle_errors
def sandbox(port: int, api_key: str | None, seed: bool) -> None:
    """Run the Render emulator on a throwaway cluster until interrupted."""
    import tempfile
    import time

    from render_rotator.sandbox.demo import sandbox as sandbox_ctx

    with stopping.held():  # made and known together: its finalizer removes it in any case
        workdir_ctx = tempfile.TemporaryDirectory(prefix="render-rotator-sandbox-")
    with workdir_ctx as workdir, sandbox_ctx(seed=seed, port=port, api_key=api_key) as box:
        # a stop request may come the moment the last line is out (even inside that echo):
        # from here on, every one ends in the same clean stop
        try:
            click.echo(
                f"Render emulator running on a throwaway PostgreSQL {box.cluster.major}. "
                "In another shell:"
            )
            click.echo(f"  export RENDER_API_URL={box.emulator.base_url}")
            click.echo(f"  export RENDER_API_KEY={box.emulator.api_key}")
            if box.scenario is not None:
                config = box.write_config(Path(workdir))
                click.echo(f"  export RENDER_ROTATOR_CONFIG={config}")
            click.echo(
                "External connection strings take TLS only, as Render's do (sslmode=require); "
                "internal ones go through the server's Unix socket."
            )
            if box.scenario is not None:
                s = box.scenario
                click.echo(
                    f"seeded: database {s.postgres_name} ({s.postgres_id}), "
                    f"service {s.service_id}, env group {s.env_group_id}; the config above "
                    "rotates it: try "
                    "`render-rotator status`, then `render-rotator rotate --dry-run`"
                )
            else:
                click.echo(
                    "empty: no workspace, database or service yet. `render-rotator sandbox --seed` "
                    "adds the demo's (a free database with sample data, a web service, an env "
                    "group) and a config for them"
                )
            click.echo("Ctrl-C to stop (everything is removed).")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt as exc:
            click.echo(f"{stopping.describe(exc)}: stopping the sandbox and removing its files")


def main() -> None:
    """Console-script entry point: stop signals are routed for the process's whole life (the
    command's own routing nests inside), then ignored while it exits."""
    stopping.install()
    try:
        cli(prog_name="render-rotator")
    finally:
        stopping.exiting()
