"""`status`: what each configured database is, when it expires, and who points at it.

A configured name also finds its rotations (``myapp-db-20250101``, or whatever `new_name`
makes), so status keeps working after a rotation renamed the database; the one the targets
point at is the current one (only it can be due).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from render_rotator.config import Config, DatabaseConfig, load_config
from render_rotator.errors import NotFoundError, RenderRotatorError
from render_rotator.render import Postgres, RenderClient
from render_rotator.render.expiry import expiry_of
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.naming import is_rotation_of
from render_rotator.rotation.targets import points_at, read_target


def _find(client: RenderClient, cfg: Config, db: DatabaseConfig) -> list[Postgres]:
    """The configured database and every rotation of it (``<name>-YYYYMMDD``, `new_name`),
    oldest first."""
    if db.id:
        try:
            pg = client.get_postgres(db.id)
        except NotFoundError:
            return []
        listed = client.list_postgres(owner_id=cfg.render.owner_id or pg.owner_id)
        found = [pg] + [
            p for p in listed if p.id != pg.id and is_rotation_of(pg.name, p.name, db.new_name)
        ]
    else:
        assert db.name is not None
        found = [
            p
            for p in client.list_postgres(owner_id=cfg.render.owner_id)
            if is_rotation_of(db.name, p.name, db.new_name)
        ]
    return sorted(found, key=lambda p: p.created_at or datetime.min.replace(tzinfo=UTC))


def status(
    config: Config | str | Path | None = None,
    database: str | None = None,
    *,
    client: RenderClient | None = None,
) -> dict[str, Any]:
    """One entry per configured database (and per rotation of it found on Render)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    dbs = [cfg.find_database(database)] if database else list(cfg.databases)
    own = client is None
    api = client or RenderClient()
    entries: list[dict[str, Any]] = []
    try:
        for db in dbs:
            found = _find(api, cfg, db)
            values = []
            for target in db.targets:
                try:
                    values.append(read_target(api, target))
                except RenderRotatorError:
                    continue
            try:
                journal = Journal.find(Path(db.settings.state_dir), db.label)
                in_progress = bool(journal and journal.unfinished)
            except RenderRotatorError:
                in_progress = True  # an unreadable journal: rotate and resume will say so
            if not found:
                entries.append(
                    {
                        "name": db.label,
                        "id": None,
                        "status": "not found",
                        "targets": [],
                        "due": False,
                        "current": False,
                        "rotation_in_progress": in_progress,
                    }
                )
            for pg in found:
                info = api.get_connection_info(pg.id)
                pointing = [
                    {"target": v.label, "connection": kind}
                    for v in values
                    if (kind := points_at(v.value, info))
                ]
                # without expiresAt, a free database expires 30 days after it was created
                expiry = expiry_of(pg)
                days = round(expiry.days_left, 1) if expiry else None
                expired = bool(expiry and expiry.expired)
                within = db.settings.rotate_within_days
                entries.append(
                    {
                        "name": db.label,
                        "postgres_name": pg.name,
                        "id": pg.id,
                        # suspended by Render at expiry, deleted 14 days later
                        "status": "expired" if expired else pg.status_raw,
                        "render_status": pg.status_raw,
                        "version": pg.version,
                        "plan": pg.plan,
                        "expires_at": expiry.expires_at.isoformat() if expiry else None,
                        "days_left": days,
                        "expired": expired,
                        "deleted_at": expiry.deleted_at.isoformat() if expired and expiry else None,
                        "targets": pointing,
                        "current": bool(pointing),
                        "due": bool(pointing) and days is not None and days <= within,
                        "rotation_in_progress": in_progress,
                    }
                )
    finally:
        if own:
            api.close()
    return {"databases": entries}


def status_lines(data: dict[str, Any]) -> list[str]:
    """A fixed-width table for people."""
    header = (
        f"{'DATABASE':<24} {'ID':<26} {'STATUS':<10} {'VER':<4} {'PLAN':<12} "
        f"{'EXPIRES':<20} {'DAYS':>5}  TARGETS"
    )
    lines = [header]
    for e in data["databases"]:
        targets = ", ".join(t["target"] for t in e.get("targets", [])) or "-"
        days = "-" if e.get("days_left") is None else f"{e['days_left']:.1f}"
        expires = "-" if e.get("id") is None else (e.get("expires_at") or "never")[:19]
        flags = [
            flag
            for flag, on in (
                (
                    f"expired: Render deletes it on {(e.get('deleted_at') or '')[:10]}; "
                    "see rotate --rescue",
                    e.get("expired"),
                ),
                ("due", e.get("due")),
                ("rotation in progress", e.get("rotation_in_progress")),
            )
            if on
        ]
        shown = f"  ({', '.join(flags)})" if flags else ""
        lines.append(
            f"{(e.get('postgres_name') or e['name']):<24} {e.get('id') or '-':<26} "
            f"{e.get('status', '-'):<10} {e.get('version') or '-':<4} "
            f"{e.get('plan') or '-':<12} {expires:<20} {days:>5}  {targets}{shown}"
        )
    return lines
