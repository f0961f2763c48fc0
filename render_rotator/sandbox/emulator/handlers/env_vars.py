"""``/services/{id}/env-vars``: a service's environment variables (the rotation repoints them)."""

from __future__ import annotations

import base64
import secrets
from functools import partial
from typing import TYPE_CHECKING, Any

from render_rotator.sandbox.emulator.handlers.services import get_svc
from render_rotator.sandbox.emulator.http import (
    SEG,
    Reply,
    Request,
    Route,
    bad_request,
    cursor,
    found,
    not_found,
    page,
)
from render_rotator.sandbox.emulator.records import EnvVar

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def env_value(body: Any, *, key_required: bool) -> tuple[str | None, str]:
    """(key, value) from ``{"key", "value"}`` or ``{"key", "generateValue": true}``."""
    if not isinstance(body, dict):
        raise bad_request("each env var must be a JSON object")
    key = body.get("key")
    if key_required and (not isinstance(key, str) or not key):
        raise bad_request("env var key is required")
    if isinstance(body.get("value"), str):
        return key, body["value"]
    if body.get("generateValue") is True:
        return key, base64.b64encode(secrets.token_bytes(32)).decode()
    raise bad_request("env var needs a string value or generateValue: true")


def list_env_vars(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        items = [
            (v.seq, {"key": v.key, "value": v.value})
            for v in sorted(svc.env_vars.values(), key=lambda v: v.seq)
        ]
    listed = page(req, "envVar", items, "envVar")
    return Reply(200, [{"envVar": p["envVar"], "cursor": p["cursor"]} for p in listed])


def replace_env_vars(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    data = req.json()
    if data is not None and not isinstance(data, list):
        raise bad_request("request body must be an array of env vars")
    pairs = [env_value(item, key_required=True) for item in data or []]
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        svc.env_vars = {}
        for key, value in pairs:
            assert key is not None
            svc.env_vars[key] = EnvVar(key, value, emu.state.next_seq())
        svc.updated = emu.clock.time()
        out = [
            {
                "envVar": {"key": v.key, "value": v.value},
                "cursor": cursor("envVar", v.seq),
            }
            for v in svc.env_vars.values()
        ]
    return Reply(200, out)


def get_env_var(emu: RenderEmulator, req: Request, service_id: str, key: str) -> Reply:
    with emu.state.lock:
        var = found(get_svc(emu, service_id).env_vars, key)
        return Reply(200, {"key": var.key, "value": var.value})


def put_env_var(emu: RenderEmulator, req: Request, service_id: str, key: str) -> Reply:
    _, value = env_value(req.obj(), key_required=False)
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        var = svc.env_vars.get(key)
        if var is None:
            svc.env_vars[key] = var = EnvVar(key, value, emu.state.next_seq())
        else:
            var.value = value
        svc.updated = emu.clock.time()
        return Reply(200, {"key": var.key, "value": var.value})


def delete_env_var(emu: RenderEmulator, req: Request, service_id: str, key: str) -> Reply:
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        if svc.env_vars.pop(key, None) is None:
            raise not_found(key)
        svc.updated = emu.clock.time()
    return Reply(204)


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", rf"/services/{SEG}/env-vars", partial(list_env_vars, emu)),
        Route("PUT", rf"/services/{SEG}/env-vars", partial(replace_env_vars, emu)),
        Route("GET", rf"/services/{SEG}/env-vars/{SEG}", partial(get_env_var, emu)),
        Route("PUT", rf"/services/{SEG}/env-vars/{SEG}", partial(put_env_var, emu)),
        Route("DELETE", rf"/services/{SEG}/env-vars/{SEG}", partial(delete_env_var, emu)),
    ]
