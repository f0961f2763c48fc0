"""``/env-groups``: environment groups shared by services, and their variables."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from render_rotator.sandbox.emulator.handlers.env_vars import env_value
from render_rotator.sandbox.emulator.http import (
    SEG,
    Reply,
    Request,
    Route,
    bad_request,
    found,
    not_found,
    page_limit,
)
from render_rotator.sandbox.emulator.records import EnvGroup, EnvVar, iso

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def get_group(emu: RenderEmulator, group_id: str) -> EnvGroup:
    group = found(emu.state.env_groups, group_id)
    return group


def env_group_json(emu: RenderEmulator, group: EnvGroup) -> dict[str, Any]:
    links = []
    for sid in group.service_ids:
        svc = emu.state.services.get(sid)
        if svc is not None:
            links.append({"id": svc.id, "name": svc.name, "type": "web"})
    data: dict[str, Any] = {
        "createdAt": iso(group.created),
        "envVars": [{"key": v.key, "value": v.value} for v in group.env_vars],
        "id": group.id,
        "name": group.name,
        "ownerId": group.owner_id,
        "secretFiles": [],
        "serviceLinks": links,
        "updatedAt": iso(group.updated),
    }
    if group.environment_id:
        data["environmentId"] = group.environment_id
    return data


def list_env_groups(emu: RenderEmulator, req: Request) -> Reply:
    names, owners = set(req.param("name")), set(req.param("ownerId"))
    with emu.state.lock:
        items = []
        for g in sorted(emu.state.env_groups.values(), key=lambda g: g.seq):
            if (names and g.name not in names) or (owners and g.owner_id not in owners):
                continue
            meta = env_group_json(emu, g)
            del meta["envVars"], meta["secretFiles"]
            items.append((g.seq, meta))
    # The spec lists bare envGroupMeta items (no cursor wrapper); the cursor is an id.
    cursor = (req.query.get("cursor") or [""])[-1]
    if cursor:
        ids = [item["id"] for _, item in items]
        if cursor not in ids:
            raise bad_request("invalid cursor")
        items = items[ids.index(cursor) + 1 :]
    limit = page_limit(req)
    return Reply(200, [item for _, item in items[:limit]])


def get_env_group(emu: RenderEmulator, req: Request, group_id: str) -> Reply:
    with emu.state.lock:
        return Reply(200, env_group_json(emu, get_group(emu, group_id)))


def update_env_group(emu: RenderEmulator, req: Request, group_id: str) -> Reply:
    body = req.obj()
    with emu.state.lock:
        group = get_group(emu, group_id)
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"]:
                raise bad_request("name must be a non-empty string")
            group.name = body["name"]
            group.updated = emu.clock.time()
        return Reply(200, env_group_json(emu, group))


def get_env_group_var(emu: RenderEmulator, req: Request, group_id: str, key: str) -> Reply:
    with emu.state.lock:
        for var in get_group(emu, group_id).env_vars:
            if var.key == key:
                return Reply(200, {"key": var.key, "value": var.value})
    raise not_found(key)


def put_env_group_var(emu: RenderEmulator, req: Request, group_id: str, key: str) -> Reply:
    _, value = env_value(req.obj(), key_required=False)
    with emu.state.lock:
        group = get_group(emu, group_id)
        for var in group.env_vars:
            if var.key == key:
                var.value = value
                break
        else:  # a new key is listed first, as in the recordings
            group.env_vars.insert(0, EnvVar(key, value, emu.state.next_seq()))
        group.updated = emu.clock.time()
        return Reply(200, env_group_json(emu, group))


def delete_env_group_var(emu: RenderEmulator, req: Request, group_id: str, key: str) -> Reply:
    with emu.state.lock:
        group = get_group(emu, group_id)
        kept = [v for v in group.env_vars if v.key != key]
        if len(kept) == len(group.env_vars):
            raise not_found(key)
        group.env_vars = kept
        group.updated = emu.clock.time()
    return Reply(204)


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", r"/env-groups", partial(list_env_groups, emu)),
        Route("GET", rf"/env-groups/{SEG}", partial(get_env_group, emu)),
        Route("PATCH", rf"/env-groups/{SEG}", partial(update_env_group, emu)),
        Route("GET", rf"/env-groups/{SEG}/env-vars/{SEG}", partial(get_env_group_var, emu)),
        Route("PUT", rf"/env-groups/{SEG}/env-vars/{SEG}", partial(put_env_group_var, emu)),
        Route("DELETE", rf"/env-groups/{SEG}/env-vars/{SEG}", partial(delete_env_group_var, emu)),
    ]
