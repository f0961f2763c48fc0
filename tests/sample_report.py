"""A rotation report as the library returns it, shared by the tests of what shows it (GitHub
Actions, notifications, the terminal), and throwaway secrets (a plain module: pytest collects
nothing here)."""

from __future__ import annotations

import uuid
from typing import Any

REPORT: dict[str, Any] = {
    "ok": True,
    "rotated": True,
    "dry_run": False,
    "due": True,
    "database": "myapp-db",
    "strategy": "create-first",
    "freeze": "suspend",
    "old": {"id": "dpg-old-a", "name": "myapp-db", "expires_at": "2025-01-31T10:00:00+00:00"},
    "new": {
        "id": "dpg-new-a",
        "name": "myapp-db-20250125",
        "expires_at": "2025-02-24T10:00:00+00:00",
        "version": "16",
    },
    "phases": [
        {"name": "inspect", "status": "done", "seconds": 1.25},
        {"name": "copy", "status": "done", "seconds": 3.5},
        {"name": "retire", "status": "skipped", "seconds": 0.0},
    ],
    "freeze_seconds": 12.34,
    "rows_copied": 5000,
    "bytes_copied": 123456,
    "backup": {"path": "backups/myapp.dump", "sha256": "ab12", "size_bytes": 2048},
    "targets": [{"target": "srv-x:DATABASE_URL", "status": "repointed"}],
    "deploys": [{"service_id": "srv-x", "deploy_id": "dep-x", "status": "live"}],
    "plan": [],
    "message": "rotated to dpg-new-a",
    "exit_code": 0,
    "notes": [],
}


def random_secret() -> str:
    """A password no other test uses, so finding it anywhere is a leak."""
    return "pw-" + uuid.uuid4().hex
