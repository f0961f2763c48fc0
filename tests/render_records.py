"""Render resources as the API returns them, for unit tests of what reads them."""

from __future__ import annotations

from typing import Any

from render_rotator.render import Postgres


def postgres_record(**fields: Any) -> Postgres:
    """A free database created 2026-05-20, with `fields` (API names) over it."""
    data: dict[str, Any] = {
        "id": "dpg-1-a",
        "name": "app-db",
        "status": "available",
        "plan": "free",
        "createdAt": "2026-05-20T12:00:00Z",
    }
    data.update(fields)
    return Postgres.from_api(data)
