"""``/blueprints``: Blueprint records marking resources as managed (nothing ever syncs)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from render_rotator.sandbox.emulator.http import SEG, Reply, Request, Route, found, page
from render_rotator.sandbox.emulator.records import Blueprint, iso

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def resource(emu: RenderEmulator, resource_id: str) -> dict[str, str] | None:
    """``{"id", "name", "type"}`` as a Blueprint lists it; None once deleted."""
    if resource_id in emu.state.postgres:
        return {"id": resource_id, "name": emu.state.postgres[resource_id].name,
                "type": "postgres"}  # fmt: skip
    if resource_id in emu.state.services:
        svc = emu.state.services[resource_id]
        return {"id": resource_id, "name": svc.name, "type": svc.type}
    if resource_id in emu.state.env_groups:
        return {"id": resource_id, "name": emu.state.env_groups[resource_id].name,
                "type": "environment_group"}  # fmt: skip
    return None


def blueprint_json(emu: RenderEmulator, blueprint: Blueprint, *, resources: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": blueprint.id,
        "name": blueprint.name,
        "status": "in_sync",
        "autoSync": blueprint.auto_sync,
        "repo": blueprint.repo,
        "branch": blueprint.branch,
        "path": blueprint.path,
        "lastSync": iso(blueprint.created),
    }
    if resources:
        found = (resource(emu, rid) for rid in blueprint.resource_ids)
        data["resources"] = [r for r in found if r is not None]
    return data


def list_blueprints(emu: RenderEmulator, req: Request) -> Reply:
    owners = set(req.param("ownerId"))
    with emu.state.lock:
        items = [
            (b.seq, blueprint_json(emu, b, resources=False))
            for b in sorted(emu.state.blueprints.values(), key=lambda b: b.seq)
            if not owners or b.owner_id in owners
        ]
    return Reply(200, page(req, "blueprint", items, "blueprint"))


def get_blueprint(emu: RenderEmulator, req: Request, blueprint_id: str) -> Reply:
    with emu.state.lock:
        blueprint = found(emu.state.blueprints, blueprint_id)
        return Reply(200, blueprint_json(emu, blueprint, resources=True))


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", r"/blueprints", partial(list_blueprints, emu)),
        Route("GET", rf"/blueprints/{SEG}", partial(get_blueprint, emu)),
    ]
