"""``/owners``: the workspaces (Render "owners") an API key can see."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from render_rotator.sandbox.emulator.http import SEG, Reply, Request, Route, found, page

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def list_owners(emu: RenderEmulator, req: Request) -> Reply:
    names, emails = set(req.param("name")), set(req.param("email"))
    with emu.state.lock:
        owners = sorted(emu.state.owners.values(), key=lambda o: o.seq)
        items = [
            (o.seq, o.json())
            for o in owners
            if (not names or o.name in names) and (not emails or o.email in emails)
        ]
    return Reply(200, page(req, "owner", items, "owner"))


def get_owner(emu: RenderEmulator, req: Request, owner_id: str) -> Reply:
    with emu.state.lock:
        owner = found(emu.state.owners, owner_id)
        return Reply(200, owner.json())


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", r"/owners", partial(list_owners, emu)),
        Route("GET", rf"/owners/{SEG}", partial(get_owner, emu)),
    ]
