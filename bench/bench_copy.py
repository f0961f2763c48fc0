"""Benchmark render-rotator's copy against the seed's path and its peers, per data profile.

    python bench/bench_copy.py [--profiles mixed,narrow,indexed,toast,largeobj]
                               [--size-gb 0.5] [--jobs 2] [--methods abcdef] [--keep]

For each profile (bench/profiles.py: many small tables, one large narrow table, index-heavy
jsonb, TOAST-heavy, large objects) it generates the source database reproducibly on a
throwaway cluster, then copies it to a second throwaway cluster with:

    (a) the baseline, exactly the seed's path: `pg_dump -Fc -f FILE`, then
        `pg_restore --no-owner` into an existing empty database; nothing more
    (b) `pg_dump -Fc | pg_restore --no-owner` (a pipe, no file)
    (c) `pg_dump -Fd -jN` + `pg_restore -jN`
    (d) `pgcopydb clone` (when installed)
    (e) the engine: `render-rotator migrate --jobs N` in its own process, content
        verification included in its time; its peak RSS and critical path are printed
    (f) the delete-first path: parallel directory backup (lz4/zstd) + parallel restore
    (g) (e) without verification, (h) (e) verifying row counts only: what content
        verification costs
    (i) the floor: only the post-data section (indexes, keys) restored with
        `pg_restore -jN` onto rows already loaded; any copy that builds indexes after
        the rows arrive needs at least this long after its last row

Each copy is checked afterwards with `verify_copy` (outside the timings). One table per
profile, then the worst ratio of (e) to (a) across profiles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiles import PROFILES, generate  # noqa: E402

from render_rotator.postgres import archive  # noqa: E402
from render_rotator.postgres.binaries import PgBin, resolve_client  # noqa: E402
from render_rotator.postgres.inventory import verify_copy  # noqa: E402
from render_rotator.postgres.passfiles import passfile_for  # noqa: E402
from render_rotator.postgres.url import PgURL  # noqa: E402
from render_rotator.sandbox.cluster import Cluster  # noqa: E402
from render_rotator.stopping import install as route_signals  # noqa: E402


@dataclass
class Outcome:
    method: str
    label: str
    seconds: float | None
    verified: str
    note: str = ""
    cpu: float | None = None  # CPU-seconds the whole machine spent meanwhile
    iowait: float | None = None  # seconds the machine's CPUs idled waiting on the disk


def machine_times() -> tuple[float, float] | None:
    """(CPU-seconds spent by every process on the machine so far, seconds its CPUs idled
    waiting on the disk) on Linux.

    The benchmark's clusters, tools and engine all run here, so the difference across one
    method is the work it took, whatever its parallelism: with N cores a method cannot
    finish in less than work / N. I/O wait tells a run that waited on the disk (wall far
    above CPU / N) from one that was short of CPU.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    iowait = ticks[4] if len(ticks) > 4 else 0
    busy = sum(ticks) - ticks[3] - iowait
    hz = os.sysconf("SC_CLK_TCK")
    return busy / hz, iowait / hz


def machine_cpu_seconds() -> float | None:
    """CPU-seconds spent by every process on the machine so far (see machine_times)."""
    times = machine_times()
    return times[0] if times is not None else None


@dataclass
class Ctx:
    source: PgURL
    target_cluster: Cluster
    source_cluster: Cluster
    client: PgBin
    jobs: int
    workdir: Path
    timeout: float = 3600
    rss_kb: int | None = None  # peak RSS of the engine's process, from (e)
    critical: list[dict[str, object]] | None = None  # the engine's critical path, from (e)
    floor_seconds: float | None = None  # the post-data part of (i), and its CPU-seconds
    floor_cpu: float | None = None


def fresh_target(ctx: Ctx, name: str) -> PgURL:
    """A new empty target database (the previous method's copy is dropped first)."""
    for row in ctx.target_cluster.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'"
    ):
        ctx.target_cluster.execute(f'DROP DATABASE "{row[0]}" WITH (FORCE)')
    ctx.target_cluster.create_database(name)
    return PgURL.parse(ctx.target_cluster.url(name))


def seed_dump(ctx: Ctx, path: Path) -> None:
    """The seed's archive of the source: `pg_dump -Fc -f FILE`, nothing more."""
    _tool(
        ctx,
        [
            ctx.client.tool("pg_dump"),
            "-Fc",
            "-f",
            str(path),
            "--no-password",
            f"--dbname={ctx.source.public_url()}",
        ],
        [ctx.source],
    )


def run_a(ctx: Ctx, target: PgURL) -> str:
    """The baseline, exactly the seed's path: a custom-format file, then a plain restore."""
    path = ctx.workdir / "a.dump"
    seed_dump(ctx, path)
    _tool(
        ctx,
        [
            ctx.client.tool("pg_restore"),
            "--no-owner",
            "--no-password",
            f"--dbname={target.public_url()}",
            str(path),
        ],
        [target],
    )
    size = path.stat().st_size
    path.unlink()
    return f"archive {size / 1e6:.0f} MB"


def run_floor(ctx: Ctx, target: PgURL) -> str:
    """The floor: the seed's archive restored without its post-data (untimed), then only the
    post-data section (indexes, keys, triggers) with `pg_restore -jN`, and ANALYZE; returns
    a note; the seconds of that part alone go to `ctx.floor_seconds`.

    Any copy that builds indexes after the rows are in (building them first makes every row
    pay for index maintenance) spends at least this much after its last row arrives. When
    it exceeds half of (a), the 0.5 target is out of reach on this machine for that profile,
    whatever the engine does.
    """
    path = ctx.workdir / "floor.dump"
    seed_dump(ctx, path)
    restore = [
        ctx.client.tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
        f"--dbname={target.public_url()}",
    ]
    _tool(ctx, [*restore, "--section=pre-data", "--section=data", str(path)], [target])
    ctx.target_cluster.execute("CHECKPOINT")
    started, cpu = time.monotonic(), machine_cpu_seconds()
    _tool(ctx, [*restore, f"-j{ctx.jobs}", "--section=post-data", str(path)], [target])
    ctx.target_cluster.execute("ANALYZE", dbname=target.dbname)
    ctx.floor_seconds = time.monotonic() - started
    after = machine_cpu_seconds()
    ctx.floor_cpu = after - cpu if after is not None and cpu is not None else None
    path.unlink()
    return f"post-data -j{ctx.jobs} + ANALYZE on the loaded rows (the rest untimed)"


def run_pipe(ctx: Ctx, target: PgURL) -> str:
    """`pg_dump -Fc | pg_restore --no-owner`: no file, one stream."""
    with passfile_for([ctx.source, target]) as pf:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(pf)
        dump = subprocess.Popen(  # noqa: S603
            [
                ctx.client.tool("pg_dump"),
                "-Fc",
                "--no-password",
                f"--dbname={ctx.source.public_url()}",
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        restore = subprocess.run(  # noqa: S603
            [
                ctx.client.tool("pg_restore"),
                "--no-owner",
                "--no-password",
                f"--dbname={target.public_url()}",
            ],
            stdin=dump.stdout,
            env=env,
            timeout=ctx.timeout,
            check=False,
        )
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait(ctx.timeout) != 0 or restore.returncode != 0:
            raise MethodFailed(
                f"pipe failed: pg_dump {dump.returncode}, pg_restore {restore.returncode}"
            )
    return "no file"


def _tool(ctx: Ctx, argv: list[str], urls: list[PgURL]) -> None:
    with passfile_for(urls) as pf:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(pf)
        subprocess.run(argv, check=True, env=env, timeout=ctx.timeout)  # noqa: S603


def run_directory(ctx: Ctx, target: PgURL) -> str:
    """Plain parallel tools: directory dump -j N, restore -j N, default compression."""
    path = ctx.workdir / "b.dir"
    _tool(
        ctx,
        [
            ctx.client.tool("pg_dump"),
            "-Fd",
            f"-j{ctx.jobs}",
            "-f",
            str(path),
            "--no-password",
            f"--dbname={ctx.source.public_url()}",
        ],
        [ctx.source],
    )
    _tool(
        ctx,
        [
            ctx.client.tool("pg_restore"),
            f"-j{ctx.jobs}",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            f"--dbname={target.public_url()}",
            str(path),
        ],
        [target],
    )
    size = archive.size_of(path)
    shutil.rmtree(path)
    return f"archive {size / 1e6:.0f} MB"


def run_pgcopydb(ctx: Ctx, target: PgURL) -> str:
    """pgcopydb clone, using the client tools of the servers' version."""
    exe = shutil.which("pgcopydb")
    if exe is None:
        raise SkipMethod("pgcopydb is not installed (apt-get install pgcopydb)")
    work = ctx.workdir / "pgcopydb"
    shutil.rmtree(work, ignore_errors=True)
    with passfile_for([ctx.source, target]) as pf:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(pf)
        env["PATH"] = f"{ctx.client.directory}:{env.get('PATH', '')}"
        env["PGCOPYDB_PG_BIN"] = str(ctx.client.directory)
        proc = subprocess.run(  # noqa: S603
            [
                exe,
                "clone",
                f"--source={ctx.source.public_url()}",
                f"--target={target.public_url()}",
                f"--table-jobs={ctx.jobs}",
                f"--index-jobs={ctx.jobs}",
                "--no-owner",
                "--no-acl",
                f"--dir={work}",
            ],
            env=env,
            timeout=ctx.timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "FATAL" in ln]
        raise MethodFailed(f"pgcopydb failed: {(tail or proc.stderr.splitlines() or ['?'])[-1]}")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return "pgcopydb " + (version.stdout.strip().splitlines() or ["?"])[0].split()[-1]


def run_engine(ctx: Ctx, target: PgURL, *extra: str) -> str:
    """`render-rotator migrate --jobs N` (content verification included) in its own process.

    Its own process so that its peak RSS (getrusage, children excluded) is the rotator's.
    `extra`: more migrate options (`--no-verify`, `--verify counts`) for (g) and (h).
    """
    more = "".join(f", {arg!r}" for arg in extra)
    code = (
        "import json, resource, sys\n"
        "from render_rotator.cli import cli\n"
        "try:\n"
        f"    cli.main(['migrate', '--jobs', '{ctx.jobs}', '--command-timeout', "
        f"'{int(ctx.timeout)}', '--json'{more}], standalone_mode=False)\n"
        "finally:\n"
        "    sys.stdout.flush()\n"
        "    print(json.dumps({'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),"
        " file=sys.stderr)\n"
    )
    env = dict(os.environ)
    env["RENDER_ROTATOR_SOURCE_URL"] = ctx.source.url()
    env["RENDER_ROTATOR_TARGET_URL"] = target.url()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=ctx.timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise MethodFailed((proc.stderr.strip().splitlines() or ["failed"])[-1][:300])
    ctx.rss_kb = int(json.loads(proc.stderr.strip().splitlines()[-1])["rss_kb"])
    result = json.loads(proc.stdout)
    copy = result.get("copy", result)
    ctx.critical = copy.get("critical_path") or []
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in (copy.get("phase_seconds") or {}).items())
    verification = result.get("verification") or {}
    if verification:
        phases += f"; verification ({verification.get('mode')}) {verification.get('seconds')}s"
    return f"peak RSS {ctx.rss_kb / 1024:.0f} MB; {phases}"


def run_backup_restore(ctx: Ctx, target: PgURL) -> str:
    """Item 2: parallel directory dump with the best compression, parallel restore."""
    path = ctx.workdir / "e.dir"
    info = archive.dump_parallel(
        ctx.client,
        ctx.source,
        path,
        jobs=ctx.jobs,
        timeout=ctx.timeout,
        connect_timeout=30,
    )
    archive.restore_parallel(
        ctx.client, target, path, jobs=ctx.jobs, timeout=ctx.timeout, connect_timeout=30
    )
    shutil.rmtree(path)
    return f"archive {info.size_bytes / 1e6:.0f} MB, {archive.best_compression(ctx.client)}"


class SkipMethod(Exception):
    """The method cannot run here (e.g. a tool is not installed)."""


class MethodFailed(Exception):
    """The method ran and failed."""


METHODS: dict[str, tuple[str, Callable[[Ctx, PgURL], str]]] = {
    "a": ("(a) seed: pg_dump -Fc file + pg_restore", run_a),
    "b": ("(b) pg_dump -Fc | pg_restore", run_pipe),
    "c": ("(c) pg_dump -Fd -jN + pg_restore -jN", run_directory),
    "d": ("(d) pgcopydb clone", run_pgcopydb),
    "e": ("(e) render-rotator migrate (verified)", run_engine),
    "f": ("(f) backup_parallel + restore_parallel", run_backup_restore),
    "g": ("(g) migrate --no-verify", lambda ctx, target: run_engine(ctx, target, "--no-verify")),
    "h": (
        "(h) migrate --verify counts",
        lambda ctx, target: run_engine(ctx, target, "--verify", "counts"),
    ),
}
# (i) is timed by itself (only its post-data part counts); see run_floor
FLOOR = ("(i) floor: post-data alone, pg_restore -jN", run_floor)


@contextlib.contextmanager
def clusters(major: int | None, keep: bool) -> Iterator[tuple[Cluster, Cluster]]:
    # plain TCP, as the published figures were measured (clusters default to TLS-only now)
    src = Cluster(major, tls=False).start()
    dst = Cluster(major, tls=False).start()
    try:
        yield src, dst
    finally:
        if keep:
            for role, cluster, db in (("source", src, "bench_source"), ("target", dst, "postgres")):
                assert cluster.base_dir is not None
                secret = cluster.base_dir / "url.txt"
                secret.write_text(cluster.url(db) + "\n")
                secret.chmod(0o600)
                print(f"kept {role}: {PgURL.parse(cluster.url(db)).redacted()} (URL in {secret})")
        else:
            src.stop()
            dst.stop()


def run_method(ctx: Ctx, key: str, no_verify: bool) -> Outcome:
    """One method on a fresh empty target, timed, then checked with `verify_copy`."""
    label, func = FLOOR if key == "i" else METHODS[key]
    target = fresh_target(ctx, f"bench_{key}")
    ctx.target_cluster.execute("CHECKPOINT")
    ctx.source_cluster.execute("CHECKPOINT")
    print(f"{label} ...", flush=True)
    t0 = time.monotonic()
    times0 = machine_times()
    try:
        note = func(ctx, target)
    except SkipMethod as exc:
        return Outcome(key, label, None, "-", f"skipped: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return Outcome(key, label, None, "-", f"failed: {exc}"[:200])
    seconds = time.monotonic() - t0
    times1 = machine_times()
    cpu = iowait = None
    if times0 is not None and times1 is not None:
        cpu, iowait = times1[0] - times0[0], times1[1] - times0[1]
    if key == "i":  # only its post-data part counts
        seconds, cpu, iowait = ctx.floor_seconds or seconds, ctx.floor_cpu, None
    verified = "skipped"
    if not no_verify:
        report = verify_copy(ctx.source, target, command_timeout=ctx.timeout)
        verified = "yes" if report.equal else "NO: " + "; ".join(report.differences[:3])
    work = f" cpu {cpu:.1f}s" if cpu is not None else ""
    work += f" iowait {iowait:.1f}s" if iowait is not None else ""
    print(f"    {seconds:.1f}s{work} verified={verified} {note}", flush=True)
    return Outcome(key, label, seconds, verified, note, cpu, iowait)


def median_outcome(runs: list[Outcome]) -> Outcome:
    """One method's runs as one row: median seconds and CPU, verified only if every run was."""
    done = [o for o in runs if o.seconds is not None]
    if not done:
        return runs[-1]
    cpus = [o.cpu for o in done if o.cpu is not None]
    waits = [o.iowait for o in done if o.iowait is not None]
    bad = [o.verified for o in done if o.verified not in ("yes", "skipped")]
    return Outcome(
        done[0].method,
        done[0].label,
        statistics.median(o.seconds for o in done if o.seconds is not None),
        bad[0] if bad else done[0].verified,
        done[-1].note + (f"; median of {len(done)} runs" if len(done) > 1 else ""),
        statistics.median(cpus) if cpus else None,
        statistics.median(waits) if waits else None,
    )


def run_profile(args: argparse.Namespace, profile: str, client: PgBin) -> float | None:
    """Generate one profile, run every method on it, print its table; returns (e)/(a)."""
    with (
        clusters(args.major, args.keep) as (src, dst),
        tempfile.TemporaryDirectory(prefix="rr-bench-") as tmp,
    ):
        started = time.monotonic()
        size = generate(src, "bench_source", profile, args.size_gb)
        print(
            f"\n## {profile}: {PROFILES[profile].description}\n"
            f"generated {size / 1e9:.2f} GB in {time.monotonic() - started:.0f}s",
            flush=True,
        )
        ctx = Ctx(
            source=PgURL.parse(src.url("bench_source")),
            target_cluster=dst,
            source_cluster=src,
            client=client,
            jobs=args.jobs,
            workdir=Path(tmp),
        )
        runs: dict[str, list[Outcome]] = {key: [] for key in args.methods}
        for round_no in range(args.repeat):  # rounds alternate the methods: drift hits all alike
            for key in args.methods:
                if round_no and runs[key] and runs[key][-1].seconds is None:
                    continue  # skipped or failed once: not again
                runs[key].append(run_method(ctx, key, args.no_verify))
        outcomes = [median_outcome(r) for r in runs.values()]
        print_table(outcomes, size, ctx.rss_kb)
        print_critical_path(ctx.critical)
        base = next((o.seconds for o in outcomes if o.method == "a" and o.seconds), None)
        engine = next((o.seconds for o in outcomes if o.method == "e" and o.seconds), None)
        return engine / base if base and engine else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--size-gb", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the clusters running")
    parser.add_argument("--methods", default="abcdef", help="which of a-i to run")
    parser.add_argument("--major", type=int, default=None, help="server major (default newest)")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the methods; the table shows medians"
    )
    args = parser.parse_args(argv)
    route_signals()  # SIGTERM / SIGHUP unwind like Ctrl-C: the clusters are stopped
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"unknown profile(s) {unknown}; choose from {', '.join(PROFILES)}")

    client = resolve_client()
    print(
        f"client {client.version} ({client.directory}), jobs={args.jobs}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, size {args.size_gb} GB"
    )
    ratios: dict[str, float | None] = {}
    for profile in profiles:
        ratios[profile] = run_profile(args, profile, client)
    print("\n## (e) / (a) per profile")
    for profile, ratio in ratios.items():
        print(f"- {profile}: {ratio:.2f}" if ratio is not None else f"- {profile}: -")
    known = {p: r for p, r in ratios.items() if r is not None}
    if known:
        worst = max(known, key=lambda p: known[p])
        print(f"worst ratio: {known[worst]:.2f} ({worst})")
    print(
        f"peak RSS of this benchmark process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


def print_critical_path(critical: list[dict[str, object]] | None) -> None:
    """Where (e)'s time went: the chain of tasks that ended last, and each one's wait."""
    if not critical:
        return
    print("(e) critical path (s from the copy's start; wait = ready until it could start):")
    for step in critical:
        ready, began, ended = (float(str(step[k])) for k in ("ready", "began", "ended"))
        workers = f" x{int(str(step.get('parallel') or 0)) + 1}" if step.get("parallel") else ""
        print(
            f"    {step['kind']:<11} {str(step['label'])[:56]:<56} ready {ready:6.1f} "
            f"wait {began - ready:5.1f} run {ended - began:6.1f}{workers} -> {ended:6.1f}"
        )
        if step.get("blocked_by") and began - ready > 0.5:
            print(f"      waited for: {str(step['blocked_by'])[:70]}")


def print_table(outcomes: list[Outcome], size: int, rss_kb: int | None) -> None:
    base = next((o.seconds for o in outcomes if o.method == "a" and o.seconds), None)
    print()
    print(f"database size {size / 1e6:.0f} MB")
    header = (
        f"| {'method':<42} | {'seconds':>7} | {'CPU-s':>6} | {'iowait':>6} | {'MB/s':>6} "
        f"| {'vs (a)':>6} | verified |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for o in outcomes:
        if o.seconds is None:
            print(
                f"| {o.label:<42} | {'-':>7} | {'-':>6} | {'-':>6} | {'-':>6} | {'-':>6} | {o.note}"
            )
            continue
        ratio = f"{o.seconds / base:.2f}" if base else "-"
        mbps = size / 1e6 / o.seconds
        cpu = f"{o.cpu:.1f}" if o.cpu is not None else "-"
        wait = f"{o.iowait:.1f}" if o.iowait is not None else "-"
        print(
            f"| {o.label:<42} | {o.seconds:>7.1f} | {cpu:>6} | {wait:>6} | {mbps:>6.1f} "
            f"| {ratio:>6} | {o.verified:<8} |"
        )
    print()
    for o in outcomes:
        if o.note and o.seconds is not None:
            print(f"{o.label}: {o.note}")
    if rss_kb:
        print(f"engine process peak RSS: {rss_kb / 1024:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
