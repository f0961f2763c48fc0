"""``/_sandbox/...``: fault injection, state and the request log, for tests in other
processes (loopback callers need no key; others need the emulator's)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from render_rotator.sandbox.emulator.http import (
    EmulatorAPIError,
    Reply,
    Request,
    error_reply,
    is_loopback,
    not_found,
)
from render_rotator.sandbox.emulator.records import CONTROL_PREFIX

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def handle(emu: RenderEmulator, req: Request) -> Reply:
    if not is_loopback(req.client) and not emu.authorized(req.headers.get("authorization", "")):
        return Reply(401, {"id": str(uuid.uuid4()), "message": "unauthorized"})
    sub = req.path[len(CONTROL_PREFIX) :].rstrip("/")
    try:
        if sub == "/faults" and req.method == "GET":
            return Reply(200, {"faults": emu.faults.describe()})
        if sub == "/faults" and req.method == "DELETE":
            emu.faults.clear()
            return Reply(200, {"faults": emu.faults.describe()})
        if sub == "/faults" and req.method == "POST":
            data = req.json()
            specs = data if isinstance(data, list) else [data]
            for spec in specs:
                emu.faults.apply(spec)
            return Reply(200, {"faults": emu.faults.describe()})
        if sub == "/state" and req.method == "GET":
            return Reply(200, emu.state_snapshot())
        if sub == "/requests" and req.method == "GET":
            with emu.state.lock:
                return Reply(200, {"requests": [list(r) for r in emu.requests]})
        if sub == "/requests" and req.method == "DELETE":
            emu.clear_requests()
            return Reply(200, {"requests": []})
    except ValueError as exc:
        return Reply(400, {"id": str(uuid.uuid4()), "message": str(exc)})
    except EmulatorAPIError as err:
        return error_reply(err)
    return error_reply(not_found(req.path))
