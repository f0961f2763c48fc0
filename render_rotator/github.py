"""GitHub Actions integration: masks, log groups, annotations, the step summary and outputs.

Most rotations run unattended in a scheduled workflow and are read afterwards in the Actions
UI, so under ``GITHUB_ACTIONS=true`` the tool speaks the runner's language:

- every secret registered with `render_rotator.secrets.register` is announced with
  ``::add-mask::`` the moment it is learnt (`install` hooks that up), before anything could
  print it;
- phases are collapsible ``::group::`` sections, failures and warnings are annotations;
- the report becomes a markdown table in ``$GITHUB_STEP_SUMMARY`` and step outputs in
  ``$GITHUB_OUTPUT``.

Workflow commands go to **stderr**. The runner parses commands on stdout and stderr alike
(both streams feed the same command manager), and stderr is where our log lines go, so a mask
always precedes, on the same stream, any line that could contain its secret; stdout stays
free for ``--json``'s single JSON object, which the action redirects to a file.

Outside Actions every function here is a no-op, so callers need no ``if``.

``python -m render_rotator.github pg-major --status FILE`` prints the PostgreSQL client major
a rotation needs (used by ``action.yml``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import quote

from render_rotator import secrets
from render_rotator.secrets import scrub

__all__ = [
    "AnnotationHandler",
    "annotate",
    "escape_data",
    "escape_property",
    "group",
    "in_actions",
    "install",
    "mask",
    "outcome",
    "outputs_from_report",
    "pg_client_major",
    "publish",
    "publish_status",
    "status_markdown",
    "summary_markdown",
    "write_outputs",
    "write_summary",
]

Level = Literal["error", "warning", "notice"]

_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_state = threading.local()
_emit_lock = threading.Lock()


def in_actions() -> bool:
    """True inside a GitHub Actions job (the runner sets GITHUB_ACTIONS=true)."""
    return os.environ.get("GITHUB_ACTIONS", "").lower() == "true"


def escape_data(value: str) -> str:
    """Escape a command's message the way the runner unescapes it (%, CR, LF)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a command property value: as data, plus the separators ':' and ','."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def _stream() -> TextIO:
    # looked up at each call: tests and rich's live display may swap sys.stderr
    return sys.stderr


def _command(name: str, message: str = "", **properties: str | None) -> None:
    props = ",".join(
        f"{key}={escape_property(str(value))}"
        for key, value in properties.items()
        if value is not None and value != ""
    )
    line = f"::{name}{' ' + props if props else ''}::{escape_data(message)}\n"
    with _emit_lock:
        stream = _stream()
        stream.write(line)
        stream.flush()


def mask(value: str | None) -> None:
    """Tell the runner to hide `value` (and its URL-encoded form, and each of its lines).

    The runner masks per log line, so a multi-line secret is also masked line by line.
    """
    if not in_actions() or not value:
        return
    variants = {value}
    if "://" not in value:  # a password may also appear percent-encoded inside a URL
        variants.add(quote(value, safe=""))
    if "\n" in value or "\r" in value:
        variants.update(line for line in value.splitlines() if len(line.strip()) >= 4)
    for variant in sorted(variants, key=len, reverse=True):
        if variant.strip():
            _command("add-mask", variant)


class AnnotationHandler(logging.Handler):
    """Log warnings and errors become annotations (shown on the run page, not only the log)."""

    _github = True

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        level: Level = "error" if record.levelno >= logging.ERROR else "warning"
        annotate(level, message, title="render-rotator")


class _BelowWarning(logging.Filter):
    """Keeps warnings off the plain stream once they are printed as annotations."""

    _github = True

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not in_actions()


def install() -> bool:
    """Under Actions: mask every secret (known and future), log warnings as annotations.

    Call once at start-up, after `logs.setup_logging` and before anything learns a secret.
    Idempotent. Returns whether it hooked in (False outside Actions).
    """
    if not in_actions():
        return False
    secrets.on_register(mask)
    logger = logging.getLogger("render_rotator")
    if not any(getattr(h, "_github", False) for h in logger.handlers):
        logger.addHandler(AnnotationHandler())
    for handler in logger.handlers:
        if getattr(handler, "_render_rotator", False) and not any(
            getattr(f, "_github", False) for f in handler.filters
        ):
            handler.addFilter(_BelowWarning())
    return True


@contextlib.contextmanager
def group(name: str) -> Iterator[None]:
    """A collapsible log section. GitHub cannot nest them, so inner groups are plain."""
    depth = getattr(_state, "depth", 0)
    opened = in_actions() and depth == 0
    if opened:
        _command("group", scrub(name))
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
        if opened:
            _command("endgroup")


def annotate(level: Level, message: str, title: str | None = None) -> None:
    """An error/warning/notice annotation on the run (secrets scrubbed)."""
    if level not in ("error", "warning", "notice"):
        raise ValueError(f"unknown annotation level {level!r}")
    if not in_actions():
        return
    _command(level, scrub(message), title=scrub(title) if title else None)


# --- environment files ---------------------------------------------------------------------


def write_outputs(outputs: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> bool:
    """Append step outputs to $GITHUB_OUTPUT; multi-line values use a random heredoc delimiter.

    Returns False (and writes nothing) when there is no output file, e.g. outside Actions.
    """
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    chunks = []
    for name, raw in outputs.items():
        if not _OUTPUT_NAME.match(name):
            raise ValueError(f"invalid output name {name!r}")
        value = _output_value(raw)
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in value:  # pragma: no cover - a 128-bit collision
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            chunks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            chunks.append(f"{name}={value}\n")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write("".join(chunks))
    return True


def _output_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return scrub(json.dumps(value, default=str))
    return scrub(str(value))


def _reports(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-database reports of a rotate result (one report, or {"databases": [...]})."""
    if isinstance(report.get("databases"), list):
        return [r for r in report["databases"] if isinstance(r, Mapping)]
    return [report]


def outputs_from_report(report: Mapping[str, Any]) -> dict[str, str]:
    """The action's outputs: rotated, new-postgres-id, expires-at (plus ok and backup-path).

    With several databases, the rotated ones' ids and expiries are comma-joined, and backup
    paths are one per line (the form actions/upload-artifact's `path` takes).
    """
    reports = _reports(report)
    rotated = [r for r in reports if r.get("rotated")]
    news = [r.get("new") or {} for r in rotated]
    ok = report.get("ok")
    if ok is None:
        ok = all(r.get("ok", True) for r in reports)
    return {
        "rotated": "true" if rotated else "false",
        "new-postgres-id": ",".join(str(n["id"]) for n in news if n.get("id")),
        "expires-at": ",".join(str(n["expires_at"]) for n in news if n.get("expires_at")),
        "ok": "true" if ok else "false",
        "backup-path": "\n".join(
            str(r["backup"]["path"])
            for r in reports
            if isinstance(r.get("backup"), Mapping) and r["backup"].get("path")
        ),
    }


def _cell(value: Any) -> str:
    """A markdown table cell: scrubbed, one line, pipes escaped."""
    if value is None or value == "":
        return "–"
    text = scrub(str(value))
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    return "–" if value in (None, "") else f"`{_cell(value)}`"


def outcome(report: Mapping[str, Any]) -> str:
    """One word for what happened to one database."""
    if not report.get("ok", True):
        return "mismatch" if report.get("exit_code") == 3 else "failed"
    if report.get("dry_run"):
        return "dry run"
    if report.get("rotated"):
        return "rotated"
    if report.get("due") is False:
        return "not due"
    return "no change"


_ICONS = {
    "rotated": "✅",
    "dry run": "📝",
    "not due": "💤",
    "no change": "➖",
    "failed": "❌",
    "mismatch": "❌",
}


def _size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "–"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def summary_markdown(report: Mapping[str, Any]) -> str:
    """The job summary: a fleet table, then per database a details table and its phases."""
    reports = _reports(report)
    lines = ["## render-rotator", ""]
    lines += [
        "| Database | Outcome | Old | New | Expires | Write freeze |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        word = outcome(r)
        old = r.get("old") or {}
        new = r.get("new") or {}
        freeze = r.get("freeze_seconds")
        lines.append(
            f"| {_cell(r.get('database'))} | {_ICONS[word]} {word} | {_code(old.get('id'))} "
            f"| {_code(new.get('id'))} | {_cell(new.get('expires_at') or old.get('expires_at'))} "
            f"| {_cell(f'{freeze:.1f} s' if isinstance(freeze, int | float) else None)} |"
        )
    for r in reports:
        lines += ["", *_details(r)]
    return "\n".join(lines) + "\n"


def _details(r: Mapping[str, Any]) -> list[str]:
    out = [f"### {_cell(r.get('database'))}", ""]
    if r.get("message"):
        out += [_cell(r["message"]), ""]
    old = r.get("old") or {}
    new = r.get("new") or {}
    rows: list[tuple[str, str]] = [("Outcome", outcome(r))]
    if r.get("strategy"):
        rows.append(("Strategy", f"{_cell(r['strategy'])}, freeze {_cell(r.get('freeze'))}"))
    if old:
        rows.append(("Old database", f"{_code(old.get('id'))} {_cell(old.get('name'))}"))
        rows.append(("Old expires", _cell(old.get("expires_at"))))
    if new:
        version = f", PostgreSQL {_cell(new['version'])}" if new.get("version") else ""
        rows.append(("New database", f"{_code(new.get('id'))} {_cell(new.get('name'))}{version}"))
        rows.append(("New expires", _cell(new.get("expires_at"))))
    if r.get("freeze_seconds") is not None:
        rows.append(("Write freeze", f"{float(r['freeze_seconds']):.1f} s"))
    if r.get("rows_copied") is not None:
        rows.append(("Copied", f"{r['rows_copied']:,} rows, {_size(r.get('bytes_copied'))}"))
    backup = r.get("backup")
    if isinstance(backup, Mapping) and backup.get("path"):
        rows.append(
            (
                "Backup",
                f"{_code(backup.get('path'))} ({_size(backup.get('size_bytes'))}, "
                f"sha256 {_code(backup.get('sha256'))})",
            )
        )
    for t in r.get("targets") or []:
        rows.append(("Target", f"{_code(t.get('target'))} {_cell(t.get('status'))}"))
    for d in r.get("deploys") or []:
        rows.append(
            (
                "Deploy",
                f"{_code(d.get('service_id'))} {_code(d.get('deploy_id'))} "
                f"{_cell(d.get('status'))}",
            )
        )
    out += ["| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in rows]
    plan = r.get("plan") or []
    if plan:
        out += ["", "**Plan**", ""]
        out += [f"{i}. {_cell(step)}" for i, step in enumerate(plan, 1)]
    phases = r.get("phases") or []
    if phases:
        out += ["", "| Phase | Status | Seconds |", "| --- | --- | ---: |"]
        for p in phases:
            seconds = p.get("seconds")
            shown = f"{seconds:.1f}" if isinstance(seconds, int | float) else "–"
            out.append(f"| {_cell(p.get('name'))} | {_cell(p.get('status'))} | {shown} |")
    for note in r.get("notes") or []:
        out += ["", f"> {_cell(note)}"]
    return out


def write_summary(report: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> bool:
    """Append the report as markdown to $GITHUB_STEP_SUMMARY; False when there is none."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(summary_markdown(report))
    return True


def publish(report: Mapping[str, Any]) -> None:
    """Everything a finished `rotate` tells GitHub: annotations, summary, outputs.

    A no-op outside Actions. Call it once, after the rotation, before printing the result.
    """
    if not in_actions():
        return
    for r in _reports(report):
        word = outcome(r)
        name = str(r.get("database") or "database")
        message = str(r.get("message") or word)
        if word in ("failed", "mismatch"):
            annotate("error", message, title=f"render-rotator: {name} {word}")
        elif word == "rotated":
            new = r.get("new") or {}
            annotate(
                "notice",
                f"{name} now runs on {new.get('id')}, expires {new.get('expires_at') or 'never'}",
                title=f"render-rotator: {name} rotated",
            )
        for note in r.get("notes") or []:
            annotate("warning", str(note), title=f"render-rotator: {name}")
    write_summary(report)
    write_outputs(outputs_from_report(report))


def status_markdown(status: Mapping[str, Any]) -> str:
    """`status --json` as a job-summary table: what exists, when it expires, what is due."""
    lines = [
        "## render-rotator status",
        "",
        "| Database | Id | Status | Version | Plan | Expires | Days left | Due | Targets |",
        "| --- | --- | --- | --- | --- | --- | ---: | --- | --- |",
    ]
    for e in status.get("databases") or []:
        days = e.get("days_left")
        targets = ", ".join(str(t.get("target")) for t in e.get("targets") or [])
        shown = str(e.get("status") or "")
        if e.get("deleted_at"):  # expired: when Render deletes it
            shown += f" (deleted on {str(e['deleted_at'])[:10]}; rotate --rescue)"
        lines.append(
            f"| {_cell(e.get('postgres_name') or e.get('name'))} | {_code(e.get('id'))} "
            f"| {_cell(shown or None)} | {_cell(e.get('version'))} | {_cell(e.get('plan'))} "
            f"| {_cell(e.get('expires_at'))} "
            f"| {_cell(f'{days:.1f}' if isinstance(days, int | float) else None)} "
            f"| {'⏰ yes' if e.get('due') else 'no'} | {_cell(targets)} |"
        )
    return "\n".join(lines) + "\n"


def publish_status(status: Mapping[str, Any]) -> None:
    """What `status` tells GitHub: a summary table and a `due` output (JSON list of names)."""
    if not in_actions():
        return
    due = sorted({str(e["name"]) for e in status.get("databases") or [] if e.get("due")})
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(status_markdown(status))
    write_outputs({"due": json.dumps(due)})


# --- PostgreSQL client version for the action ---------------------------------------------


def _major(version: Any) -> int | None:
    match = re.match(r"\s*(\d+)", str(version or ""))
    return int(match.group(1)) if match else None


def pg_client_major(
    status: Mapping[str, Any],
    database: str | None = None,
    upgrade_versions: Mapping[str, str | None] | None = None,
) -> int | None:
    """The client major a rotation needs: the newest server it reads or writes.

    pg_dump must be at least as new as the old server, and pg_restore should match the new
    one (a newer pg_dump emits settings an older server rejects), so with an upgrade
    (`version` in the config, passed in `upgrade_versions` by database name) the newer wins.
    """
    majors = []
    for entry in status.get("databases") or []:
        if database and database not in (entry.get("name"), entry.get("id")):
            continue
        majors.append(_major(entry.get("version")))
        if upgrade_versions:
            majors.append(_major(upgrade_versions.get(str(entry.get("name")))))
    found = [m for m in majors if m is not None]
    return max(found) if found else None


def embedded_client_major() -> int:
    """The major of the PostgreSQL client the package carries (0 when it is missing), so
    the action installs a client only for a server newer than that."""
    from render_rotator.postgres.binaries import bin_dir_info, embedded_bin_dir

    directory = embedded_bin_dir()
    info = bin_dir_info(directory) if directory is not None else None
    return info.major if info is not None else 0


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m render_rotator.github")
    sub = parser.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("pg-major", help="print the PostgreSQL client major a rotation needs")
    pg.add_argument("--status", required=True, help="file holding `status --json` output")
    pg.add_argument("--config", help="config file (for `version` upgrades)")
    pg.add_argument("--database", help="only this configured database (name or id)")
    sub.add_parser(
        "embedded-major", help="print the major of the embedded PostgreSQL client (0: none)"
    )
    args = parser.parse_args(argv)
    if args.command == "embedded-major":
        print(embedded_client_major())
        return 0
    status = json.loads(Path(args.status).read_text(encoding="utf-8"))
    upgrades: dict[str, str | None] = {}
    if args.config:
        from render_rotator.config import load_config

        for db in load_config(args.config).databases:
            upgrades[db.label] = db.version
    major = pg_client_major(status, args.database, upgrades)
    if major is None:
        print("no database version found in the status output", file=sys.stderr)
        return 1
    print(major)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the action and tests
    sys.exit(_cli())
