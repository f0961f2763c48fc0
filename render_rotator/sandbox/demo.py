"""`render-rotator demo` and `render-rotator sandbox`: the product, for real, on one machine.

The demo starts a throwaway PostgreSQL, the Render emulator in front of it, seeds a free
database full of app data wired to a web service and an env group, then runs a real
rotation through the public API. No account, no network.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from render_rotator import stopping
from render_rotator.rotation.observer import RotationUI
from render_rotator.rotation.report import RotationResult
from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.sandbox.seed import Scenario, seed_demo

log = logging.getLogger("render_rotator.sandbox")

CONFIG_TEMPLATE = """\
# written by `render-rotator demo` or `sandbox --seed`: the same file works against Render itself
[defaults]
strategy = "auto"          # create-first; Render allows one free database, so delete-first
freeze = "suspend"
backup_dir = "backups"
state_dir = "state"
jobs = 2
provision_timeout = 120
deploy_timeout = 120

[[database]]
name = "{name}"

  [[database.target]]
  service = "{service_id}"
  key = "DATABASE_URL"
  connection = "internal"

  [[database.target]]
  env_group = "{env_group_id}"
  key = "DATABASE_URL"
  connection = "internal"
"""


@dataclass
class Sandbox:
    """A running emulator on a throwaway cluster, optionally seeded."""

    cluster: Cluster
    emulator: RenderEmulator
    scenario: Scenario | None

    def write_config(self, directory: Path) -> Path:
        assert self.scenario is not None
        path = directory / "render-rotator.toml"
        path.write_text(
            CONFIG_TEMPLATE.format(
                name=self.scenario.postgres_name,
                service_id=self.scenario.service_id,
                env_group_id=self.scenario.env_group_id,
            )
        )
        return path


@contextlib.contextmanager
def sandbox(
    *,
    seed: bool = True,
    rows: int = 3000,
    port: int = 0,
    api_key: str | None = None,
    provision_delay: float = 1.0,
    deploy_delay: float = 1.0,
    ui: RotationUI | None = None,
) -> Iterator[Sandbox]:
    """Cluster + emulator (+ demo scenario), all removed on exit (also on Ctrl-C, SIGTERM
    or SIGHUP when run from the command line, which turns those into KeyboardInterrupt)."""
    with (
        Cluster() as cluster,
        RenderEmulator(
            cluster,
            port=port,
            api_key=api_key,
            provision_delay=provision_delay,
            deploy_delay=deploy_delay,
        ) as emulator,
    ):
        scenario = None
        if seed:
            loading = ui.waiting(f"{rows:,} rows of sample data to load") if ui else None
            with loading or contextlib.nullcontext():
                scenario = seed_demo(emulator, rows=rows)
        yield Sandbox(cluster, emulator, scenario)


def run_demo(
    *, rows: int = 3000, workdir: Path | None = None, ui: RotationUI | None = None
) -> RotationResult:
    """A full rotation of a seeded free database; the backup stays in `workdir`.

    Strategy auto on a free database: Render (here, the emulator) refuses a second free
    database, so the rotation takes the delete-first path after a verified backup.
    """
    from render_rotator.render import RenderClient
    from render_rotator.rotation.workflow import rotate

    own_dir = workdir is None
    with contextlib.ExitStack() as undo:
        if workdir is None:
            with stopping.held():  # made and known together: a stop from here removes it
                workdir = Path(tempfile.mkdtemp(prefix="render-rotator-demo-"))
                # if the sandbox is gone, nothing in here could be resumed or inspected
                undo.callback(shutil.rmtree, workdir, ignore_errors=True)
        with sandbox(rows=rows, provision_delay=0.5, deploy_delay=0.5, ui=ui) as box:
            config = box.write_config(workdir)
            with RenderClient(
                api_key=box.emulator.api_key, base_url=box.emulator.base_url
            ) as client:
                result = rotate(config, yes=True, client=client, ui=ui)
        if own_dir:
            kept = (
                f"the demo's config, journal and backup are kept in {workdir} "
                f"(remove it with: rm -rf {workdir})"
            )
            with stopping.held():  # kept only once said, even if a stop comes now
                undo.pop_all()
                log.info(kept)
            for report in result.reports:
                report.notes.append(kept)
    return result
