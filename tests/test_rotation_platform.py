"""Rotations against Render's platform rules, on the emulator with real PostgreSQL.

- Both strategies redeploy with ``deployMode: deploy_only`` only (the emulator records every
  deploy body), shipping the build that already ran: no new commit, no new image.
- ``freeze = "maintenance"`` with a background worker among the targets: the web service goes
  into maintenance mode, the worker is suspended (observed from inside the copy phase), and
  both are undone afterwards. Static sites are neither frozen nor redeployed.
- Refused in inspect, with nothing changed: a service with no successful build (deploy_only
  would have nothing to ship) and a Blueprint-managed database or target (``allow_blueprint``
  overrides).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator import load_config, rotate
from render_rotator.errors import ConfigError
from render_rotator.render import RenderClient
from render_rotator.rotation.observer import LogUI
from render_rotator.sandbox.emulator import DEPLOY_ONLY_NO_BUILD_MESSAGE, RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    App,
    assert_rotated,
    error_lines,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0

DEPLOY_ONLY = {"deployMode": "deploy_only"}


class SnapshotUI(LogUI):
    """The rotation's own UI hook: takes the emulator's state when a phase starts."""

    def __init__(self, emu: RenderEmulator) -> None:
        self.emu = emu
        self.at: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.at[name] = self.emu.state_snapshot()
        with super().phase(name):
            yield


def add_target(config: Path, service_id: str, key: str = "DATABASE_URL") -> None:
    with config.open("a") as f:
        f.write(f'\n  [[database.target]]\n  service = "{service_id}"\n  key = "{key}"\n')


def run_rotation(emu: RenderEmulator, config: Path, ui: SnapshotUI) -> dict[str, Any]:
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        result = rotate(config, client=client, yes=True, ui=ui)
    report = result.to_dict()
    assert result.exit_code == 0, report
    return report


def builds(emu: RenderEmulator, service_id: str) -> list[Any]:
    """What each deploy shipped (commit id or image), oldest first."""
    return [
        (d["commit"] or {}).get("id") or (d.get("image") or {}).get("sha")
        for d in reversed(emu.deploys(service_id))
    ]


def test_maintenance_freeze_suspends_a_worker_and_every_redeploy_is_deploy_only(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """delete-first (free plan, auto), maintenance mode, a web service and a worker."""
    app = make_app(emu)
    worker = emu.add_service(
        f"{app.name}-worker", app.owner_id, {"DATABASE_URL": app.internal_url},
        type="background_worker", repo="https://github.com/acme/app",
    )  # fmt: skip
    config = write_config(tmp_path, app, strategy="auto", freeze="maintenance")
    add_target(config, worker)
    before = inventory(app.external_url)
    shipped = {sid: builds(emu, sid) for sid in (app.service_id, worker)}

    dry = run_cli(emu, "rotate", "-c", str(config), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = report_of(dry)["plan"]
    assert (
        f"freeze writes: maintenance ({app.service_id}); suspend {worker} (maintenance mode "
        "exists only for web services)"
    ) in plan
    assert any(step.startswith("thaw and redeploy") and "deploy_only" in step for step in plan)

    ui = SnapshotUI(emu)
    report = run_rotation(emu, config, ui)
    assert report["strategy"] == "delete-first" and report["freeze"] == "maintenance"
    assert_rotated(app, report, before, config=config)

    # inside the copy: the web service behind its maintenance page, the worker suspended
    during = ui.at["copy"]["services"]
    assert during[app.service_id]["maintenanceMode"]["enabled"] is True
    assert during[app.service_id]["suspended"] == "not_suspended"
    assert during[worker]["suspended"] == "suspended"
    assert during[worker]["type"] == "background_worker"
    # afterwards: each undone exactly (no maintenance mode was ever asked of the worker)
    after = emu.state_snapshot()["services"]
    assert after[worker]["suspended"] == "not_suspended"
    assert after[app.service_id]["maintenanceMode"]["enabled"] is False
    assert (
        emu.env_vars(worker)["DATABASE_URL"]
        == (emu.connection_info(report["new"]["id"])["internalConnectionString"])
    )
    # one deploy per service, deploy_only, the same build as before: no new code shipped
    for sid in (app.service_id, worker):
        assert emu.deploy_requests(sid) == [DEPLOY_ONLY], sid
        assert builds(emu, sid) == shipped[sid] + shipped[sid][-1:], sid
        assert emu.deploys(sid)[0]["status"] == "live"
    assert {d["service_id"] for d in report["deploys"]} == {app.service_id, worker}


def test_create_first_redeploys_deploy_only_and_leaves_static_sites_alone(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """create-first (paid plan), suspend freeze, a web service, a cron job and a static site."""
    app = make_app(emu, plan=PAID_PLAN)
    cron = emu.add_service(
        f"{app.name}-cron", app.owner_id, {"DATABASE_URL": app.internal_url},
        type="cron_job", repo="https://github.com/acme/app",
    )  # fmt: skip
    site = emu.add_service(
        f"{app.name}-site", app.owner_id, {"DATABASE_URL": app.internal_url}, type="static_site"
    )
    config = write_config(tmp_path, app, strategy="create-first", freeze="suspend")
    add_target(config, cron)
    add_target(config, site)
    before = inventory(app.external_url)
    shipped = {sid: builds(emu, sid) for sid in (app.service_id, cron, site)}

    ui = SnapshotUI(emu)
    report = run_rotation(emu, config, ui)
    assert report["strategy"] == "create-first"
    assert_rotated(app, report, before, config=config)

    during = ui.at["backup + copy"]["services"]  # the copy runs beside the backup
    assert during[app.service_id]["suspended"] == "suspended"
    assert during[cron]["suspended"] == "suspended"
    assert during[site]["suspended"] == "not_suspended"  # a static site is left alone
    after = emu.state_snapshot()["services"]
    assert [after[s]["suspended"] for s in (app.service_id, cron, site)] == ["not_suspended"] * 3
    for sid in (app.service_id, cron):
        assert emu.deploy_requests(sid) == [DEPLOY_ONLY], sid
        assert builds(emu, sid) == shipped[sid] + shipped[sid][-1:], sid
    assert emu.deploy_requests(site) == [] and builds(emu, site) == shipped[site]
    internal = emu.connection_info(report["new"]["id"])["internalConnectionString"]
    assert emu.env_vars(site)["DATABASE_URL"] == internal  # repointed, for its next build
    assert emu.env_vars(cron)["DATABASE_URL"] == internal
    assert any(site in note and "static site" in note for note in report["notes"])
    assert site not in {d["service_id"] for d in report["deploys"]}


def test_a_deploy_render_refuses_is_rolled_back_like_a_failed_one(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    """inspect passed, but Render refuses the worker's deploy_only when it comes to it: every
    target goes back on the old database and every service is redeployed on it."""
    app = make_app(emu, plan=PAID_PLAN)
    worker = emu.add_service(
        f"{app.name}-worker", app.owner_id, {"DATABASE_URL": app.internal_url},
        type="background_worker",
    )  # fmt: skip
    config = write_config(tmp_path, app, strategy="create-first", freeze="maintenance")
    add_target(config, worker)
    deploys_path = f"/services/{worker}/deploys"
    emu.faults.client_error(1, 400, DEPLOY_ONLY_NO_BUILD_MESSAGE, deploys_path, "POST")
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = report_of(result)
    assert f"deploy failed for {worker} (refused by Render:" in report["message"]
    assert "target(s) were put back on the old database" in report["message"]
    assert ("POST", deploys_path, 400) in emu.requests
    # back on the old database, redeployed there (deploy_only again), nothing left frozen
    assert app.env()["DATABASE_URL"] == app.internal_url
    assert app.group_env()["DATABASE_URL"] == app.internal_url
    assert emu.env_vars(worker)["DATABASE_URL"] == app.internal_url
    assert emu.deploy_requests(app.service_id) == [DEPLOY_ONLY, DEPLOY_ONLY]
    assert emu.deploy_requests(worker) == [DEPLOY_ONLY]  # the rollback's; the refused one
    # never reached the handler
    services = emu.state_snapshot()["services"]
    assert services[worker]["suspended"] == "not_suspended"
    assert services[app.service_id]["maintenanceMode"]["enabled"] is False
    assert app.postgres_id in [pg["id"] for pg in app.databases()]
    rollback = [d for d in report["deploys"] if d["rollback"]]
    assert {d["service_id"] for d in rollback} == {app.service_id, worker}
    assert all(d["status"] == "live" for d in rollback)


def _refused(emu: RenderEmulator, app: App, config: Path, needle: str) -> str:
    """rotate refuses in inspect: exit 2, one error line, nothing written anywhere."""
    untouched = app.snapshot()
    first_request = len(emu.requests)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes")
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert needle in line, line
    assert app.snapshot() == untouched
    assert [r for r in emu.requests[first_request:] if r[0] != "GET"] == []
    assert not journal_file(config, app).exists()
    return line


def test_a_service_without_a_successful_build_is_refused_before_anything_changes(
    emu: RenderEmulator, tmp_path: Path
) -> None:
    app = make_app(emu)
    broken = emu.add_service(
        f"{app.name}-worker", app.owner_id, {"DATABASE_URL": app.internal_url},
        type="background_worker", repo="https://github.com/acme/app",
        initial_deploy="build_failed",
    )  # fmt: skip
    config = write_config(tmp_path, app)
    add_target(config, broken)
    line = _refused(emu, app, config, f"service {broken} has never had a successful deploy")
    assert "deploy_only" in line and "deploy it once" in line
    assert emu.deploy_requests(broken) == []


@pytest.mark.parametrize("managed", ["database", "service", "env group"])
def test_a_blueprint_managed_rotation_is_refused_unless_allowed(
    emu: RenderEmulator, tmp_path: Path, managed: str
) -> None:
    app = make_app(emu)
    resource = {
        "database": app.postgres_id,
        "service": app.service_id,
        "env group": app.env_group_id,
    }[managed]
    blueprint = emu.add_blueprint(f"{app.name}-bp", app.owner_id, [resource])
    emu.add_blueprint("unrelated", app.owner_id, [])
    config = write_config(tmp_path, app)
    line = _refused(emu, app, config, f"is managed by Blueprint {app.name}-bp ({blueprint}")
    assert resource in line and "update render.yaml first" in line
    assert "allow_blueprint = true" in line
    if managed == "database":
        assert "re-create a database under the old name" in line

    # the documented override: the plan goes ahead, and the report says why
    allowed = write_config(tmp_path / "allowed", app, allow_blueprint=True)
    dry = run_cli(emu, "rotate", "-c", str(allowed), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    notes = report_of(dry)["notes"]
    assert any(n.startswith("allow_blueprint: rotating although") and blueprint in n for n in notes)


def test_allow_blueprint_is_a_validated_setting(tmp_path: Path) -> None:
    path = tmp_path / "render-rotator.toml"
    path.write_text(
        '[defaults]\nallow_blueprint = true\n\n[[database]]\nname = "a"\n\n'
        '[[database]]\nname = "b"\nallow_blueprint = false\n'
    )
    a, b = load_config(path).databases
    assert a.settings.allow_blueprint is True and b.settings.allow_blueprint is False
    path.write_text('[defaults]\nallow_blueprint = "yes"\n\n[[database]]\nname = "a"\n')
    with pytest.raises(ConfigError, match=r"defaults\.allow_blueprint: must be true or false"):
        load_config(path)
