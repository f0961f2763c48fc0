"""render-rotator: keep a Render app alive across the expiry of its free PostgreSQL database.

Public API (imported lazily so `import render_rotator` stays fast)::

    from render_rotator import DatabaseManager, migrate_database   # the seed's API
    from render_rotator import copy_database, verify_copy           # fast copy, proof of copy
    from render_rotator import load_config, rotate, RenderClient    # the rotation
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DatabaseManager": "render_rotator.postgres.manager",
    "migrate_database": "render_rotator.postgres.migrate",
    "BackupInfo": "render_rotator.postgres.manager",
    "copy_database": "render_rotator.postgres.copy",
    "verify_copy": "render_rotator.postgres.inventory",
    "take_inventory": "render_rotator.postgres.inventory",
    "VerificationReport": "render_rotator.postgres.inventory",
    "Fingerprint": "render_rotator.postgres.fingerprint",
    "take_fingerprint": "render_rotator.postgres.fingerprint",
    "compare_fingerprints": "render_rotator.postgres.fingerprint",
    "load_config": "render_rotator.config",
    "rotate": "render_rotator.rotation",
    "resume": "render_rotator.rotation",
    "RenderClient": "render_rotator.render.client",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'render_rotator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
