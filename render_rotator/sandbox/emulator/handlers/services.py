"""``/services``: service records, their maintenance mode and suspension (no app runs)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from render_rotator.sandbox.emulator.http import (
    SEG,
    Reply,
    Request,
    Route,
    bad_request,
    found,
    page,
)
from render_rotator.sandbox.emulator.records import (
    DASHBOARD_KIND,
    MAINTENANCE_ONLY_WEB_MESSAGE,
    Service,
    iso,
)

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def get_svc(emu: RenderEmulator, service_id: str) -> Service:
    svc = found(emu.state.services, service_id)
    return svc


def details_for_type(svc: Service, details: dict[str, Any]) -> dict[str, Any]:
    """Trim web-service details to what Render shows for the service's type: only web
    services have maintenance mode; workers and cron jobs open no ports; cron jobs have a
    schedule; static sites have no runtime at all."""
    if svc.type == "web_service":
        return details
    details.pop("maintenanceMode", None)
    details.pop("healthCheckPath", None)
    if svc.type in ("background_worker", "cron_job"):
        details.pop("openPorts", None)
        details.pop("url", None)
    if svc.type == "cron_job":
        details["schedule"] = "0 * * * *"
        details.pop("numInstances", None)
    if svc.type == "static_site":
        return {
            "buildCommand": "npm run build",
            "publishPath": "dist",
            "previews": details["previews"],
            "pullRequestPreviewsEnabled": "no",
            "url": details.get("url", ""),
        }
    return details


def service_json(svc: Service) -> dict[str, Any]:
    git = svc.repo is not None
    details: dict[str, Any] = {
        "buildPlan": "starter",
        "env": "python" if git else "image",
        "envSpecificDetails": (
            {
                "buildCommand": "pip install -r requirements.txt",
                "startCommand": "gunicorn app:app",
            }
            if git
            else {"dockerCommand": "", "dockerContext": "", "dockerfilePath": ""}
        ),
        "healthCheckPath": svc.health_check_path,
        "maintenanceMode": dict(svc.maintenance),
        "numInstances": 1,
        "openPorts": [{"port": 10000, "protocol": "TCP"}],
        "plan": svc.plan,
        "previews": {"generation": "off"},
        "pullRequestPreviewsEnabled": "no",
        "region": svc.region,
        "runtime": "python" if git else "image",
        "sshAddress": f"{svc.id}@ssh.{svc.region}.render.com",
        "url": f"https://{svc.slug}.onrender.com",
    }
    details = details_for_type(svc, details)
    data: dict[str, Any] = {
        "autoDeploy": svc.auto_deploy,
        "createdAt": iso(svc.created),
        "dashboardUrl": f"https://dashboard.render.com/{DASHBOARD_KIND[svc.type]}/{svc.id}",
        "id": svc.id,
    }
    if git:
        data["branch"] = svc.branch
    else:
        data["imagePath"] = svc.image_path
    data.update({"name": svc.name, "notifyOnFail": "default", "ownerId": svc.owner_id})
    if git:
        data["repo"] = svc.repo
    data.update(
        {
            "rootDir": "",
            "serviceDetails": details,
            "slug": svc.slug,
            "suspended": "suspended" if svc.suspended else "not_suspended",
            "suspenders": ["user"] if svc.suspended else [],
            "type": svc.type,
            "updatedAt": iso(svc.updated),
        }
    )
    if svc.environment_id:
        data["environmentId"] = svc.environment_id
    return data


def list_services(emu: RenderEmulator, req: Request) -> Reply:
    names, owners = set(req.param("name")), set(req.param("ownerId"))
    types, suspended = set(req.param("type")), set(req.param("suspended"))
    regions = set(req.param("region"))
    with emu.state.lock:
        items = []
        for svc in sorted(emu.state.services.values(), key=lambda s: s.seq):
            state = "suspended" if svc.suspended else "not_suspended"
            if (
                (names and svc.name not in names)
                or (owners and svc.owner_id not in owners)
                or (types and svc.type not in types)
                or (suspended and state not in suspended)
                or (regions and svc.region not in regions)
            ):
                continue
            items.append((svc.seq, service_json(svc)))
    return Reply(200, page(req, "service", items, "service"))


def get_service(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    with emu.state.lock:
        return Reply(200, service_json(get_svc(emu, service_id)))


def update_service(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    body = req.obj()
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        details = body.get("serviceDetails")
        if details is not None and not isinstance(details, dict):
            raise bad_request("serviceDetails must be an object")
        details = details or {}
        mode = details.get("maintenanceMode")
        if mode is not None:
            if not isinstance(mode, dict) or not isinstance(mode.get("enabled"), bool):
                raise bad_request("maintenanceMode.enabled must be a boolean")
            if not isinstance(mode.get("uri", ""), str):
                raise bad_request("maintenanceMode.uri must be a string")
        if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
            raise bad_request("name must be a non-empty string")
        if "autoDeploy" in body and body["autoDeploy"] not in ("yes", "no"):
            raise bad_request("autoDeploy must be 'yes' or 'no'")
        if mode is not None and svc.type != "web_service":
            raise bad_request(MAINTENANCE_ONLY_WEB_MESSAGE)
        if mode is not None:
            svc.maintenance = {"enabled": mode["enabled"], "uri": mode.get("uri", "")}
        if "name" in body:
            svc.name = body["name"]
        if "autoDeploy" in body:
            svc.auto_deploy = body["autoDeploy"]
        if isinstance(details.get("healthCheckPath"), str):
            svc.health_check_path = details["healthCheckPath"]
        if isinstance(details.get("plan"), str):
            svc.plan = details["plan"]
        svc.updated = emu.clock.time()
        return Reply(200, service_json(svc))


def suspend_service(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        svc.suspended = True
        svc.updated = emu.clock.time()
    return Reply(202, empty=True)


def resume_service(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        svc.suspended = False
        svc.updated = emu.clock.time()
    return Reply(202, empty=True)


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", r"/services", partial(list_services, emu)),
        Route("GET", rf"/services/{SEG}", partial(get_service, emu)),
        Route("PATCH", rf"/services/{SEG}", partial(update_service, emu)),
        Route("POST", rf"/services/{SEG}/suspend", partial(suspend_service, emu)),
        Route("POST", rf"/services/{SEG}/resume", partial(resume_service, emu)),
    ]
