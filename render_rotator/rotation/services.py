"""What the rotation does to each affected service, by Render service type.

==================  ===============  ==================  ==========================
type                freeze=suspend   freeze=maintenance  after the repoint
==================  ===============  ==================  ==========================
web_service         suspend          maintenance mode    deploy_only, wait for live
private_service     suspend          suspend             deploy_only, wait for live
background_worker   suspend          suspend             deploy_only, wait for live
cron_job            suspend          suspend             deploy_only, wait for live
static_site         left alone       left alone          left alone (a note says so)
==================  ===============  ==================  ==========================

Render offers maintenance mode on web services only (it answers 400 for any other type), so
``freeze = "maintenance"`` suspends the others: a suspended worker, private service or cron
job runs nothing, so it writes nothing. A static site serves files and holds no runtime
database URL: its env vars are read only when it is built, so it is neither frozen nor
redeployed (a target on it is still repointed, for its next build).

Every redeploy is ``deployMode: deploy_only``: the last successful build with the new env
vars, never the branch's latest commit (which could ship unreviewed code and rebuild for
minutes). A service with no successful deploy has no build to ship, so inspect refuses the
rotation before anything changes. Render documents that each cron job run starts a new
instance of its last build, not whether an env var change reaches the next run without a
deploy: redeploying it (deploy_only, same code) makes sure the next run uses the new database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from render_rotator.errors import UsageError
from render_rotator.render import DEPLOY_SUCCESSFUL

if TYPE_CHECKING:
    from render_rotator.rotation.context import Rotation

DEPLOY_MODE = "deploy_only"
STATIC_SITE = "static_site"
WEB_SERVICE = "web_service"


def freeze_action(service_type: str, mode: str) -> str | None:
    """``"suspend"``, ``"maintenance"`` or None (leave it alone) for one service."""
    if service_type == STATIC_SITE or mode not in ("suspend", "maintenance"):
        return None
    if mode == "maintenance" and service_type == WEB_SERVICE:
        return "maintenance"
    return "suspend"


def service_types(ctx: Rotation) -> dict[str, str]:
    """Each affected service's Render type, read once and kept in the journal."""
    known: dict[str, str] = ctx.state.service_types
    missing = [sid for sid in ctx.affected_services() if sid not in known]
    for service_id in missing:
        known[service_id] = ctx.client.get_service(service_id).type or WEB_SERVICE
    return known


def runtime_services(ctx: Rotation) -> list[str]:
    """Affected services that run with the database URL (all but static sites)."""
    types = service_types(ctx)
    return [sid for sid in ctx.affected_services() if types.get(sid) != STATIC_SITE]


def describe_freeze(ctx: Rotation, mode: str) -> str:
    """The freeze step for the dry run: which service gets which action."""
    types = service_types(ctx)
    services = ctx.affected_services()
    if mode not in ("suspend", "maintenance") or not services:
        return f"{mode} ({', '.join(services) or 'no services'})"
    parts: dict[str, list[str]] = {}
    for service_id in services:
        action = freeze_action(types.get(service_id, WEB_SERVICE), mode) or "left alone"
        parts.setdefault(action, []).append(service_id)
    shown = [f"{mode} ({', '.join(parts.pop(mode))})"] if mode in parts else []
    for action, ids in parts.items():
        why = (
            "maintenance mode exists only for web services"
            if action == "suspend"
            else "static sites hold no runtime database URL"
        )
        shown.append(f"{action} {', '.join(ids)} ({why})")
    return "; ".join(shown)


def note_static_sites(ctx: Rotation) -> None:
    """Say, in the report, which static sites were left alone and why."""
    types = service_types(ctx)
    for service_id in ctx.affected_services():
        if types.get(service_id) == STATIC_SITE:
            note = (
                f"{service_id} is a static site: its env vars are read only at build time, so "
                "it was not frozen or redeployed; its next build uses the new value"
            )
            if note not in ctx.report.notes:
                ctx.report.notes.append(note)


def check_deploy_only(ctx: Rotation) -> None:
    """Refuse before anything changes when a service has no build that deploy_only could ship."""
    successful = [status.value for status in DEPLOY_SUCCESSFUL]
    for service_id in runtime_services(ctx):
        if ctx.client.list_deploys(service_id, limit=1, statuses=successful):
            continue
        raise UsageError(
            f"service {service_id} has never had a successful deploy, so the rotation's "
            f"redeploy ({DEPLOY_MODE}: the last successful build with the new env vars) has "
            "nothing to deploy; nothing was changed",
            hint="fix the service's build and deploy it once from the Render dashboard, then "
            "rotate again (or remove it from the targets)",
        )
