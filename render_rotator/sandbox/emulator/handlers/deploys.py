"""``/services/{id}/deploys``: deploys that move through Render's statuses on the emulator's
clock (``deploy_delay`` seconds to ``live``), ``deploy_only`` reusing the last build."""

from __future__ import annotations

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
    not_found,
    page,
)
from render_rotator.sandbox.emulator.records import (
    BUILT_OUTCOMES,
    DEFAULT_IMAGE,
    DEPLOY_MODES,
    DEPLOY_ONLY_CONFLICT_MESSAGE,
    DEPLOY_ONLY_NO_BUILD_MESSAGE,
    Deploy,
    Service,
    iso,
    new_id,
)

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator


def new_deploy(
    seq: int,
    svc: Service,
    created: float,
    duration: float,
    outcome: str,
    trigger: str,
    commit_id: str | None,
    queued_for: float = 0.0,
    reuse: Deploy | None = None,
) -> Deploy:
    """A deploy record; with `reuse` (deploy_only) it ships that deploy's build again."""
    git = svc.repo is not None
    commit = image = None
    if reuse is not None:
        commit = dict(reuse.commit) if reuse.commit else None
        image = dict(reuse.image) if reuse.image else None
    elif git:
        commit = {
            "id": commit_id or secrets.token_hex(20),
            "message": "Update app",
            "createdAt": iso(created - 60),
        }
    else:
        image = {
            "ref": svc.image_path or DEFAULT_IMAGE,
            "sha": "sha256:" + secrets.token_hex(32),
        }
    return Deploy(
        id=new_id("dep"),
        seq=seq,
        service_id=svc.id,
        created=created,
        duration=duration,
        outcome=outcome,
        trigger=trigger,
        git=git,
        commit=commit,
        image=image,
        queued_for=queued_for,
        built=reuse is None,
    )


def last_build(svc: Service) -> Deploy | None:
    """The newest deploy whose build succeeded: what ``deploy_only`` ships again."""
    for d in reversed(svc.deploys):
        if d.outcome in BUILT_OUTCOMES:
            return d
    return None


def timeline_of(d: Deploy) -> list[tuple[float, str]]:
    """When each status starts: queued, created, build, update, then the outcome."""
    t0, span = d.created + d.queued_for, d.duration
    steps: list[tuple[float, str]] = []
    if d.queued_for:
        steps.append((d.created, "queued"))
    if d.git and d.built:
        steps.append((t0, "created"))
        steps.append((t0 + 0.2 * span, "build_in_progress"))
        if d.outcome != "build_failed":
            steps.append((t0 + 0.6 * span, "update_in_progress"))
    else:
        steps.append((t0, "update_in_progress"))
    steps.append((t0 + span, d.outcome))
    return steps


def deploy_json(svc: Service, d: Deploy, now: float) -> dict[str, Any]:
    timeline = timeline_of(d)
    status, changed = timeline[0][1], d.created
    for start, name in timeline:
        if now >= start:
            status, changed = name, start
    finished_at = timeline[-1][0] if now >= timeline[-1][0] else None
    if status == "live":
        for later in svc.deploys:
            if later.seq > d.seq and later.outcome == "live":
                went_live = timeline_of(later)[-1][0]
                if now >= went_live:
                    status, changed = "deactivated", went_live
                    break
    data: dict[str, Any] = {"id": d.id, "commit": d.commit}
    if d.image is not None:
        data["image"] = dict(d.image)
    data.update(
        {
            "status": status,
            "trigger": d.trigger,
            "createdAt": iso(d.created),
            "updatedAt": iso(changed),
            "finishedAt": iso(finished_at) if finished_at is not None else None,
        }
    )
    return data


def list_deploys(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    statuses = set(req.param("status"))
    now = emu.clock.time()
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        items = []
        for d in reversed(svc.deploys):
            data = deploy_json(svc, d, now)
            if statuses and data["status"] not in statuses:
                continue
            items.append((d.seq, data))
    listed = page(req, "deploy", items, "deploy", descending=True)
    return Reply(200, [{"deploy": p["deploy"], "cursor": p["cursor"]} for p in listed])


def create_deploy(emu: RenderEmulator, req: Request, service_id: str) -> Reply:
    body = req.obj(required=False)
    with emu.state.lock:
        get_svc(emu, service_id).deploy_requests.append(dict(body))
    if body.get("clearCache", "do_not_clear") not in ("clear", "do_not_clear"):
        raise bad_request("clearCache must be 'clear' or 'do_not_clear'")
    commit_id = body.get("commitId")
    if commit_id is not None and not isinstance(commit_id, str):
        raise bad_request("commitId must be a string")
    mode = body.get("deployMode", "build_and_deploy")
    if mode not in DEPLOY_MODES:
        raise bad_request(f"deployMode must be one of {', '.join(DEPLOY_MODES)}")
    deploy_only = mode == "deploy_only"
    if deploy_only and any(k in body for k in ("commitId", "imageUrl", "clearCache")):
        raise bad_request(DEPLOY_ONLY_CONFLICT_MESSAGE)
    now = emu.clock.time()
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        reuse = last_build(svc) if deploy_only else None
        if deploy_only and reuse is None:
            raise bad_request(DEPLOY_ONLY_NO_BUILD_MESSAGE)
        failure = emu.faults.take_deploy_failure(service_id)
        queued = emu.faults.take_queue()
        deploy = new_deploy(
            emu.state.next_seq(),
            svc,
            now,
            emu.deploy_delay,
            failure or "live",
            "api",
            commit_id,
            queued_for=max(emu.deploy_delay / 2, 0.05) if queued else 0.0,
            reuse=reuse,
        )
        svc.deploys.append(deploy)
        if queued:
            return Reply(202, empty=True)
        return Reply(201, deploy_json(svc, deploy, now))


def get_deploy(emu: RenderEmulator, req: Request, service_id: str, deploy_id: str) -> Reply:
    with emu.state.lock:
        svc = get_svc(emu, service_id)
        for d in svc.deploys:
            if d.id == deploy_id:
                return Reply(200, deploy_json(svc, d, emu.clock.time()))
    raise not_found(deploy_id)


def routes(emu: RenderEmulator) -> list[Route]:
    return [
        Route("GET", rf"/services/{SEG}/deploys", partial(list_deploys, emu)),
        Route("POST", rf"/services/{SEG}/deploys", partial(create_deploy, emu)),
        Route("GET", rf"/services/{SEG}/deploys/{SEG}", partial(get_deploy, emu)),
    ]
