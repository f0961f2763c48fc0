"""Measure what users feel: the write-freeze window of a full sandbox rotation.

    python bench/bench_rotation.py [--size-gb 1.0] [--profile mixed]
                                   [--strategies create-first,delete-first]
                                   [--provision-delay 5] [--deploy-delay 2]

For each strategy it starts the Render emulator on throwaway PostgreSQL clusters, provisions
the app's database (a paid plan for create-first, so a second database may exist beside it;
free for delete-first), fills it with a bench/profiles.py profile as the database's own
user, wires a web service to it, and runs a real `rotate` (freeze = suspend, jobs = 2).
It prints each phase's time, the copy (copy + verify) time and the freeze window, and
checks the target of the issue: freeze window <= copy time + 10 s. create-first runs its
copy beside its backup: the backup phase lasts as long as the longer of the two, the copy
phase shows the copy's own time, and window - move is the time outside the data move.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiles import PROFILES  # noqa: E402

from render_rotator.postgres.connect import connection  # noqa: E402
from render_rotator.postgres.url import PgURL, require_tls  # noqa: E402
from render_rotator.render import RenderClient  # noqa: E402
from render_rotator.rotation.workflow import rotate  # noqa: E402
from render_rotator.sandbox.cluster import Cluster  # noqa: E402
from render_rotator.sandbox.emulator import RenderEmulator  # noqa: E402
from render_rotator.sandbox.seed import add_service, create_postgres  # noqa: E402
from render_rotator.stopping import install as route_signals  # noqa: E402

CONFIG = """\
[defaults]
strategy = "{strategy}"
freeze = "suspend"
backup_dir = "{workdir}/backups"
state_dir = "{workdir}/state"
jobs = 2
command_timeout = 3600
provision_timeout = 600
deploy_timeout = 600

[[database]]
name = "{name}"

  [[database.target]]
  service = "{service_id}"
  key = "DATABASE_URL"
  connection = "internal"
"""


class AsOwner:
    """The subset of `Cluster` the profiles use, run as the database's own user.

    On Render the app's tables belong to the database user, not to a superuser; the copy
    must read them as that user, so the benchmark data are created the same way.
    """

    def __init__(self, url: str) -> None:
        self.url = PgURL.parse(require_tls(url))

    def execute(self, sql: str, dbname: str = "", autocommit: bool = True) -> None:
        with connection(self.url, statement_timeout=None) as conn, conn.cursor() as cur:
            cur.execute(sql)

    def query(self, sql: str, dbname: str = "") -> list[tuple[object, ...]]:
        with connection(self.url, statement_timeout=None) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())


def run(strategy: str, args: argparse.Namespace) -> dict[str, float]:
    with (
        Cluster() as cluster,
        RenderEmulator(
            cluster, provision_delay=args.provision_delay, deploy_delay=args.deploy_delay
        ) as emu,
        tempfile.TemporaryDirectory(prefix="rr-bench-rotation-") as workdir,
    ):
        owner = emu.default_owner_id or emu.add_owner("Bench")
        plan = "free" if strategy == "delete-first" else "basic_256mb"
        pg = create_postgres(emu, "app-db", owner, plan=plan, timeout=120)
        info = emu.connection_info(pg["id"])
        started = time.monotonic()
        owner_db = AsOwner(info["externalConnectionString"])
        PROFILES[args.profile].generate(owner_db, "", args.size_gb)  # type: ignore[arg-type]
        size = owner_db.query("SELECT pg_database_size(current_database())")[0][0]
        print(
            f"\n## {strategy}: {args.profile} profile, {int(str(size)) / 1e9:.2f} GB "
            f"(generated in {time.monotonic() - started:.0f}s; load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}: the machine may be shared)",
            flush=True,
        )
        service = add_service(
            emu, "app-web", owner, {"DATABASE_URL": info["internalConnectionString"]}
        )
        config = Path(workdir) / "render-rotator.toml"
        config.write_text(
            CONFIG.format(strategy=strategy, workdir=workdir, name="app-db", service_id=service)
        )
        with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            result = rotate(config, yes=True, client=client, confirm=None)
        report = result.reports[0]
        if not report.ok:
            raise SystemExit(f"{strategy}: rotation failed: {report.message}")
        phases = {p.name: p.seconds for p in report.phases}
        for p in report.phases:
            print(f"    {p.name:<12} {p.status:<8} {p.seconds:7.1f}s")
        copy = phases.get("copy", 0.0) + phases.get("verify", 0.0)
        if strategy == "delete-first":
            copy += phases.get("backup", 0.0)  # the data move is backup + restore here
        freeze = report.freeze_seconds or 0.0
        print(
            f"freeze window {freeze:.1f}s, data move (backup/copy + verify) {copy:.1f}s, "
            f"outside the move {freeze - copy:.1f}s, target <= {copy + 10:.1f}s: "
            f"{'met' if freeze <= copy + 10 else 'NOT met'} (load average now "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})"
        )
        return {"freeze": freeze, "copy": copy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--profile", default="mixed", choices=sorted(PROFILES))
    parser.add_argument("--strategies", default="create-first,delete-first")
    parser.add_argument("--provision-delay", type=float, default=5.0)
    parser.add_argument("--deploy-delay", type=float, default=2.0)
    args = parser.parse_args(argv)
    route_signals()  # SIGTERM / SIGHUP unwind like Ctrl-C: the clusters are stopped
    results = {s: run(s, args) for s in args.strategies.split(",") if s}
    print("\n| strategy | freeze window | data move | target (move + 10 s) |")
    print("|---|---|---|---|")
    for strategy, r in results.items():
        verdict = "met" if r["freeze"] <= r["copy"] + 10 else "NOT met"
        print(f"| {strategy} | {r['freeze']:.1f}s | {r['copy']:.1f}s | {verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
