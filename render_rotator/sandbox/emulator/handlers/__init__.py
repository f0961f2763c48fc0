"""The Render API, one module per resource; each module's `routes` binds its handlers to an
emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from render_rotator.sandbox.emulator.handlers import (
    blueprints,
    deploys,
    env_groups,
    env_vars,
    owners,
    postgres,
    services,
)
from render_rotator.sandbox.emulator.http import Route

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def api_routes(emu: RenderEmulator) -> list[Route]:
    """Every API route, bound to `emu`."""
    return [
        route
        for module in (owners, postgres, services, env_vars, deploys, env_groups, blueprints)
        for route in module.routes(emu)
    ]
