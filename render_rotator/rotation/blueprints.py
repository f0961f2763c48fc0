"""Blueprint-managed resources: a rotation that the next Blueprint sync would undo.

A Blueprint (render.yaml) re-applies its file to every resource it manages on each sync. When
it manages the old database, the next sync after a rotation re-creates a database under the
old name (empty) and resets every ``fromDatabase`` env var to it; when it manages a target
service or env group whose variable render.yaml sets (``value:`` or ``fromDatabase:``), the
sync puts the old URL back. Either way the app silently moves off the rotated data.

Render's API says which resources a Blueprint manages (``GET /blueprints``, then
``GET /blueprints/{id}`` and its ``resources``), but not what render.yaml says about them, so
inspect refuses any overlap before anything changes, explaining the fix. ``allow_blueprint =
true`` (in [defaults] or one [[database]]) is the documented override for someone who has
already taken the database and its URL out of render.yaml's control.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from render_rotator.errors import UsageError
from render_rotator.render import Blueprint, BlueprintResource

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

log = logging.getLogger("render_rotator.rotation")


def managed_resources(ctx: Rotation) -> list[tuple[Blueprint, BlueprintResource]]:
    """(Blueprint, resource) for the old database, each affected service and each target env
    group that a Blueprint of the workspace manages."""
    state = ctx.state
    watched = [state.known_old_id, *ctx.affected_services()]
    watched += [t.env_group for t in ctx.db.targets if t.env_group]
    found: list[tuple[Blueprint, BlueprintResource]] = []
    for listed in ctx.client.list_blueprints(owner_id=state.owner_id):
        blueprint = ctx.client.get_blueprint(listed.id)
        for resource_id in dict.fromkeys(watched):
            resource = blueprint.manages(resource_id)
            if resource is not None:
                found.append((blueprint, resource))
    return found


def _what(ctx: Rotation, resource: BlueprintResource) -> str:
    if resource.id == ctx.state.old_id:
        return f"the database {resource.name or ctx.state.old_name} ({resource.id})"
    kind = "env group" if resource.type == "environment_group" else "service"
    return f"the {kind} {resource.name} ({resource.id})" if resource.name else resource.id


def check_blueprints(ctx: Rotation) -> None:
    """Refuse (UsageError, nothing changed) when a Blueprint manages what the rotation changes,
    unless ``allow_blueprint`` is set; then only a note says so."""
    found = managed_resources(ctx)
    if not found:
        return
    described = "; ".join(
        f"{_what(ctx, resource)} is managed by Blueprint {bp.name or bp.id} ({bp.id}, "
        f"{bp.path or 'render.yaml'}{' in ' + bp.repo if bp.repo else ''})"
        for bp, resource in found
    )
    if ctx.settings.allow_blueprint:
        note = f"allow_blueprint: rotating although {described}"
        log.warning("%s", note)
        ctx.report.notes.append(note)
        return
    old_managed = any(resource.id == ctx.state.old_id for _bp, resource in found)
    undo = (
        "its next sync would re-create a database under the old name and reset every "
        "fromDatabase env var to it"
        if old_managed
        else "its next sync would set the env vars render.yaml defines back to their old value"
    )
    raise UsageError(
        f"{described}: {undo}, undoing the rotation; nothing was changed",
        hint="update render.yaml first: remove the database from its databases: list and "
        "turn each fromDatabase (or value:) env var that names it into sync: false, sync the "
        "Blueprint (or disconnect it), then rotate with allow_blueprint = true in the config",
    )
