"""Why a Render database cannot be reached from here: its IP allow list.

Render admits outside connections (the external URL) only from the CIDR blocks in a
database's allow list; an empty list admits nothing from outside Render. The refusal looks
like any other connection failure, so the error names the allow list and the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from render_rotator.errors import ConnectError, RenderRotatorError
from render_rotator.render import IPAllowEntry, Postgres


def admits_everyone(entries: Iterable[IPAllowEntry]) -> bool:
    """True when a ``0.0.0.0/0`` (or ``::/0``) block opens the database to every address."""
    for entry in entries:
        try:
            if ipaddress.ip_network(entry.cidr_block, strict=False).prefixlen == 0:
                return True
        except ValueError:
            continue
    return False


def explain_unreachable(pg: Postgres, error: ConnectError) -> RenderRotatorError:
    """`error` reworded when `pg`'s allow list may be what shut this machine out."""
    entries = pg.ip_allow_list
    if admits_everyone(entries) or "accepts only TLS connections" in error.message:
        return error  # open to all, or refused for another named reason
    if entries:
        why = (
            "its IP allow list ("
            + ", ".join(e.cidr_block for e in entries)
            + ") may not include this machine's address"
        )
    else:
        why = "its IP allow list is empty, which admits no connection from outside Render"
    return ConnectError(
        f"cannot connect to {pg.name} ({pg.id}) from this machine: {why} ({error.message})",
        hint="add this machine's public IP (in GitHub Actions, the runner's address for the "
        "run) to the database's Access Control list in the Render dashboard while it rotates, "
        "then remove it; the new database gets the same list",
    )
