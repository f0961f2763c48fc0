"""Provisioning failures before the freeze (create-first, and auto on the free plan): the app
is never frozen, nothing is left on Render but the old database (or a database the next run
adopts rather than duplicates), and a second `rotate` or `resume` ends with exactly one new
database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import (
    PAID_PLAN,
    assert_rotated,
    inventory,
    journal_file,
    make_app,
    report_of,
    run_cli,
    write_config,
)

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0

# The 5xx bursts carry a short Retry-After, as the 429 burst does: what is under test is the
# rotation's end state after retries, not the client's own backoff (1 s doubling, unit-tested
# in test_render_client.py), which would add about 16 s of waiting to each of these cases.
# A dropped connection has no answer to carry one: two drops are a burst (a retry of a retry)
# and keep the backoff real, at 1 s + 2 s.
FAULTS: dict[str, Callable[[RenderEmulator], None]] = {
    "create-500-burst": lambda e: e.faults.server_error(
        n=4, status=500, method="POST", path_prefix="/postgres", retry_after=0.05
    ),
    "create-503-after-processing": lambda e: e.faults.server_error(
        n=4,
        status=503,
        method="POST",
        path_prefix="/postgres",
        after_processing=True,
        retry_after=0.05,
    ),
    "create-429-burst": lambda e: e.faults.rate_limit(
        n=4, retry_after=0.05, method="POST", path_prefix="/postgres"
    ),
    "create-connection-dropped": lambda e: e.faults.drop_connection(
        n=2, method="POST", path_prefix="/postgres"
    ),
    "create-400": lambda e: e.faults.client_error(
        n=1, status=400, message="plan not available", method="POST", path_prefix="/postgres"
    ),
    "never-available": lambda e: e.faults.never_available(True),
    "poll-503-burst": lambda e: e.faults.server_error(
        n=4, status=503, method="GET", path_prefix="/postgres/", retry_after=0.05
    ),
}


def _frozen_calls(emu: RenderEmulator) -> list[tuple[str, str, int]]:
    return [r for r in emu.requests if r[1].endswith(("/suspend", "/maintenance"))]


@pytest.mark.usefixtures("no_faults_left")
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("plan", [PAID_PLAN, "free"])
def test_a_provisioning_failure_before_the_freeze_leaves_nothing_behind(
    emu: RenderEmulator, tmp_path: Path, fault: str, plan: str
) -> None:
    app = make_app(emu, plan=plan)
    before = inventory(app.external_url)
    strategy = "create-first" if plan == PAID_PLAN else "auto"
    config = write_config(tmp_path, app, strategy=strategy, provision_timeout=2)
    emu.requests.clear()
    FAULTS[fault](emu)
    result = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    emu.faults.clear()
    if result.exit_code == 0:  # retried through the fault
        assert_rotated(app, report_of(result), before, config=config)
        return
    if app.postgres_id in [pg["id"] for pg in app.databases()]:
        # failed before anything was deleted: the app runs on the old database
        svc = emu.service(app.service_id)
        assert svc["suspended"] == "not_suspended"
        assert svc["serviceDetails"]["maintenanceMode"]["enabled"] is False
    if plan == PAID_PLAN:
        assert not _frozen_calls(emu), emu.requests
    # whatever is left, the next run ends with exactly one new database
    if journal_file(config, app).exists():
        again = run_cli(emu, "resume", "-c", str(config), "--json")
    else:
        again = run_cli(emu, "rotate", "-c", str(config), "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert_rotated(app, report_of(again), before, config=config)
