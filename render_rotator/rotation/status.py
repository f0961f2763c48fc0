"""`status`: what each configured database is, when it expires, and who points at it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from render_rotator.config import Config, base_name, load_config
from render_rotator.errors import NotFoundError, RenderRotatorError
from render_rotator.render import Postgres, RenderClient
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.targets import points_at, read_target


def _find(client: RenderClient, cfg: Config, name: str | None, pg_id: str | None) -> list[Postgres]:
    if pg_id:
        try:
            return [client.get_postgres(pg_id)]
        except NotFoundError:
            return []
    assert name is not None
    return [
        p
        for p in client.list_postgres(owner_id=cfg.render.owner_id)
        if p.name == name or base_name(p.name) == base_name(name)
    ]


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
            found = _find(api, cfg, db.name, db.id)
            values = []
            for target in db.targets:
                try:
                    values.append(read_target(api, target))
                except RenderRotatorError:
                    continue
            journal = Journal.find(Path(db.settings.state_dir), db.label)
            if not found:
                entries.append(
                    {
                        "name": db.label,
                        "id": None,
                        "status": "not found",
                        "targets": [],
                        "due": False,
                    }
                )
            for pg in found:
                info = api.get_connection_info(pg.id)
                pointing = [
                    {"target": v.label, "connection": kind}
                    for v in values
                    if (kind := points_at(v.value, info))
                ]
                days = None
                if pg.expires_at is not None:
                    days = round((pg.expires_at - datetime.now(UTC)).total_seconds() / 86400, 1)
                within = db.settings.rotate_within_days
                entries.append(
                    {
                        "name": db.label,
                        "postgres_name": pg.name,
                        "id": pg.id,
                        "status": pg.status_raw,
                        "version": pg.version,
                        "plan": pg.plan,
                        "expires_at": pg.expires_at.isoformat() if pg.expires_at else None,
                        "days_left": days,
                        "targets": pointing,
                        "due": bool(pointing) and days is not None and days <= within,
                        "rotation_in_progress": bool(journal and journal.unfinished),
                    }
                )
    finally:
        if own:
            api.close()
    return {"databases": entries}


def status_lines(data: dict[str, Any]) -> list[str]:
    """A fixed-width table for people."""
    header = (
        f"{'DATABASE':<24} {'ID':<26} {'STATUS':<10} {'VER':<4} {'PLAN':<8} "
        f"{'EXPIRES':<20} {'DAYS':>5}  TARGETS"
    )
    lines = [header]
    for e in data["databases"]:
        targets = ", ".join(t["target"] for t in e.get("targets", [])) or "-"
        days = "-" if e.get("days_left") is None else f"{e['days_left']:.1f}"
        expires = (e.get("expires_at") or "never")[:19]
        flag = "  (due)" if e.get("due") else ""
        lines.append(
            f"{(e.get('postgres_name') or e['name']):<24} {e.get('id') or '-':<26} "
            f"{e.get('status', '-'):<10} {e.get('version') or '-':<4} {e.get('plan') or '-':<8} "
            f"{expires:<20} {days:>5}  {targets}{flag}"
        )
    return lines
