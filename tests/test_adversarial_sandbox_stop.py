"""SIGTERM to `render-rotator sandbox` and `render-rotator demo` at several moments of their
life (starting the cluster, serving): no PostgreSQL server and no data directory is left.

Besides moments picked by time, the windows found to lose a stop are hit exactly, by a
condition in the stopped process itself: the signal's handler running inside a finalizer
(whose exceptions Python drops), a SIGTERM right after a temp dir is made and before it is
recorded for cleanup, and server processes whose command line does not name their directory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from render_rotator.sandbox.cluster import Cluster
from tests.rotation_support import REPO


def _servers_under(root: Path) -> list[str]:
    """Live processes that mention `root` on their command line (a postgres -D under it) or
    work inside it (a postmaster's children, "postgres: checkpointer", name no directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""  # gone, or exited and waiting to be reaped
        if str(root) in cmd or cwd == str(root) or cwd.startswith(f"{root}/"):
            found.append(f"{entry.name}: {cmd}")
    return found


def _binary_cache(name: str) -> bool:
    return name.startswith("render-rotator-pg-") and "staging" not in name


def _leftovers(root: Path, log: str) -> list[str]:
    """What is left in TMPDIR: the unpacked binaries are a cache shared by every run (not
    their staging copy), and a demo stopped mid-rotation keeps its workdir (config, journal,
    backup) on purpose, saying so; neither holds a cluster."""
    kept = [p for p in root.glob("render-rotator-demo-*") if f"kept in {p}" in log]
    for path in kept:
        assert not list(path.rglob("PG_VERSION")), f"a data directory in {path}"
    return sorted(p.name for p in root.iterdir() if not _binary_cache(p.name) and p not in kept)


@pytest.mark.parametrize("command", [["sandbox", "--seed"], ["demo"]], ids=["sandbox", "demo"])
@pytest.mark.parametrize(
    "after",
    [
        0.5,
        1.5,
        3.0,
        "ready",
    ],
)
def test_sigterm_leaves_no_server_and_no_files(
    tmp_path: Path, command: list[str], after: float | str
) -> None:
    # the cluster runs as an unprivileged user: its TMPDIR must be reachable by it
    root = Path(tempfile.mkdtemp(prefix="rr-sigterm-"))
    root.chmod(0o755)
    try:
        _run_and_stop(root, tmp_path, command, after)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_and_stop(root: Path, tmp_path: Path, command: list[str], after: float | str) -> None:
    env = {**os.environ, "TMPDIR": str(root), "PYTHONPATH": str(REPO)}
    for key in ("RENDER_API_KEY", "RENDER_API_URL", "RENDER_ROTATOR_CONFIG"):
        env.pop(key, None)
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "render_rotator", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        try:
            if after == "ready":
                deadline = time.monotonic() + 120
                marker = "Ctrl-C" if command[0] == "sandbox" else "phase copy"
                while marker not in log.read_text():
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            else:
                time.sleep(float(after))  # a moment in its start-up, not a condition
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    deadline = time.monotonic() + 10
    while _servers_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)  # a postgres told to stop fast takes a moment to go
    assert _servers_under(root) == [], log.read_text()
    assert _leftovers(root, log.read_text()) == [], log.read_text()


@pytest.mark.parametrize("program", ["initdb", "pg_ctl"])
def test_sigterm_while_a_cluster_tool_runs_leaves_nothing(program: str) -> None:
    """Stopped exactly while initdb (its bootstrap backend writing the data directory) or
    pg_ctl start runs: the tool's children stop too and the directory is removed."""
    root = Path(tempfile.mkdtemp(prefix="rr-tool-stop-"))
    root.chmod(0o755)
    env = {**os.environ, "TMPDIR": str(root), "PYTHONUNBUFFERED": "1"}
    script = (
        "from render_rotator import stopping\n"
        "from render_rotator.sandbox.cluster import Cluster\n"
        "stopping.install()\n"
        "try:\n"
        "    with Cluster():\n"
        "        pass\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped')\n"
    )
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(f"/{program} " in cmd for cmd in _servers_under(root)):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, f"{program} never ran"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
        assert "stopped" in out, out
        deadline = time.monotonic() + 30
        while _servers_under(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _servers_under(root) == []
        assert [p.name for p in root.iterdir() if p.name.startswith("rr-pg")] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


# -- the windows that lost a stop, hit exactly ---------------------------------------------

RUN_CLI = """
import sys
from render_rotator.cli import main
sys.argv = ["render-rotator", *{args!r}]
main()
"""

# The handler of a SIGTERM runs wherever the main thread is; during a command's imports that
# is often a weakref callback of the import system, whose exception Python drops ("Exception
# ignored in KeyedRef.remove"): the sandbox then served on and was killed by the caller's
# timeout, leaving its server. Here the SIGTERM comes from inside such a callback, when the
# command imports the sandbox (its handlers are in place by then).
IN_A_FINALIZER = """
import os, signal, sys, weakref

class _StopInAFinalizer:
    def find_spec(self, name, path=None, target=None):
        if name == "render_rotator.sandbox.demo":
            sys.meta_path.remove(self)

            class Box:
                pass

            box = Box()
            ref = weakref.ref(box, lambda _r: os.kill(os.getpid(), signal.SIGTERM))
            del box  # the callback runs now, and the handler inside it
        return None

sys.meta_path.insert(0, _StopInAFinalizer())
"""

# A SIGTERM right after a temp dir is made, before the code that made it has recorded it
# for cleanup (the handler runs at the next line of the caller).
AFTER_MKDTEMP = """
import os, re, signal, tempfile

_mkdtemp = tempfile.mkdtemp

def _mkdtemp_then_stop(*args, **kwargs):
    path = _mkdtemp(*args, **kwargs)
    if re.match({pattern!r}, os.path.basename(path)) and not _mkdtemp_then_stop.done:
        _mkdtemp_then_stop.done = True
        print("made", path, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    return path

_mkdtemp_then_stop.done = False
tempfile.mkdtemp = _mkdtemp_then_stop
"""


def _run_until_it_ends(root: Path, tmp_path: Path, script: str, serving: str, code: int = 1) -> str:
    """Run `script` with TMPDIR=`root` until it exits by itself with `code`; fail if it
    reaches `serving` instead (its stop request was lost), stopping it then."""
    env = {**os.environ, "TMPDIR": str(root), "PYTHONUNBUFFERED": "1"}
    for key in ("RENDER_API_KEY", "RENDER_API_URL", "RENDER_ROTATOR_CONFIG"):
        env.pop(key, None)
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
            [sys.executable, "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None:
                assert serving not in log.read_text(), "the stop was lost:\n" + log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _servers_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)  # a postgres told to stop fast takes a moment to go
    text = log.read_text()
    assert _servers_under(root) == [], text
    assert _leftovers(root, text) == [], text
    assert proc.returncode == code, text
    return text


# A SIGTERM as the process exits, when atexit removes the private directory of password
# files: the command's handlers are gone by then, and SIGTERM's default killed the process
# before the directory was removed.
AT_EXIT = """
import os, signal
from render_rotator.postgres import passfiles

_remove = passfiles._remove

def _stopped_then_remove(pid, path):
    print("exiting with", os.listdir(os.path.dirname(path)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    _remove(pid, path)

passfiles._remove = _stopped_then_remove
"""


@pytest.fixture
def root() -> Iterator[Path]:
    """TMPDIR for the stopped command, reachable by the cluster's unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="rr-sigterm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "serving"),
    [(["sandbox", "--seed"], "Ctrl-C to stop"), (["demo"], "phase inspect")],
    ids=["sandbox", "demo"],
)
def test_a_sigterm_a_finalizer_swallowed_still_stops_the_command(
    root: Path, tmp_path: Path, args: list[str], serving: str
) -> None:
    out = _run_until_it_ends(root, tmp_path, IN_A_FINALIZER + RUN_CLI.format(args=args), serving)
    assert "error: stopped by SIGTERM" in out
    assert "Exception ignored" not in out


@pytest.mark.parametrize(
    ("args", "pattern", "serving", "said"),
    [
        (["sandbox", "--seed"], "render-rotator-sandbox-", "Ctrl-C", "stopped by SIGTERM"),
        (["sandbox", "--seed"], "rr-pg", "Ctrl-C", "stopped by SIGTERM"),
        (["demo"], "render-rotator-demo-", "phase inspect", "stopped by SIGTERM"),
        (["demo"], "rr-pg", "phase inspect", "stopped by SIGTERM"),
        # the private directory of password files, made when the backup starts: the
        # rotation lands, and the demo keeps its workdir, saying so
        (["demo"], r"render-rotator-\d+-", "phase copy", "interrupted in phase backup"),
    ],
    ids=["sandbox-workdir", "sandbox-cluster", "demo-workdir", "demo-cluster", "demo-passfiles"],
)
def test_a_sigterm_right_after_a_temp_dir_is_made_leaves_nothing(
    root: Path, tmp_path: Path, args: list[str], pattern: str, serving: str, said: str
) -> None:
    script = AFTER_MKDTEMP.format(pattern=pattern) + RUN_CLI.format(args=args)
    out = _run_until_it_ends(root, tmp_path, script, serving)
    made = [line.split()[1] for line in out.splitlines() if line.startswith("made ")]
    assert [Path(p).parent for p in made] == [root], out
    assert said in out, out


def test_stop_ends_cluster_processes_that_do_not_name_its_directory(root: Path) -> None:
    """A postmaster's children ("postgres: checkpointer") and initdb's backend work in the
    data directory without naming it on their command line; `stop()` after a cut start-up
    must end them too, or they go on writing into the directory it deletes. Here such a
    process is a single-user backend given its directory through PGDATA, kept busy making
    tables."""
    cluster = Cluster(base_dir=root, tls=False)
    cluster.start()
    assert cluster.base_dir is not None
    base, data = cluster.base_dir, cluster.data_dir
    stopped = cluster._run(  # the server goes; the cluster object still holds its files
        [str(cluster._bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
    )
    assert stopped.returncode == 0, stopped.stderr
    cluster._running = False
    user = cluster._os_user
    ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    backend = subprocess.Popen(  # noqa: S603 - the cluster's own server program
        [str(cluster._bin_dir / "postgres"), "--single", "postgres"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PGDATA": str(data), "LC_ALL": "C.UTF-8"},
        cwd=base,
        start_new_session=True,
        **ids,  # type: ignore[call-overload]
    )

    def keep_writing() -> None:
        with contextlib.suppress(OSError):  # until the backend is gone
            for n in itertools.count():
                assert backend.stdin is not None
                backend.stdin.write(f"CREATE TABLE t{n} (x int);\n".encode())
                backend.stdin.flush()

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while not any(f"{backend.pid}: " in p for p in _servers_under(base)):
            assert backend.poll() is None, "the single-user backend did not start"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert str(data) not in (Path("/proc") / str(backend.pid) / "cmdline").read_text()
        cluster.stop()
        assert backend.poll() is not None, "a process of the cluster outlived stop()"
        assert not base.exists()
        assert _servers_under(root) == []
    finally:
        if backend.poll() is None:
            backend.kill()
        backend.wait()
        writer.join(timeout=10)
        with contextlib.suppress(OSError):  # what the writer had buffered has nowhere to go
            assert backend.stdin is not None
            backend.stdin.close()


def test_a_sigterm_while_the_process_exits_still_removes_its_files(
    root: Path, tmp_path: Path
) -> None:
    script = AT_EXIT + RUN_CLI.format(args=["demo", "--rows", "10"])
    out = _run_until_it_ends(root, tmp_path, script, "never printed", code=0)
    assert re.search(r"exiting with \[.*'render-rotator-\d+-", out), out  # it was there


def test_python_m_exits_1_after_a_sigterm_inside_a_string_exec(root: Path, tmp_path: Path) -> None:
    """The handler raising inside code that a string `exec` runs (the methods dataclasses
    make while a command imports its modules) used to end `python -m render_rotator` by
    SIGINT instead of the exit code 1 a stopped command has."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import sys\n"
        "class _StopInAnExec:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'render_rotator.sandbox.demo':\n"
        "            sys.meta_path.remove(self)\n"
        "            exec('import os, signal; os.kill(os.getpid(), signal.SIGTERM); x = 1')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _StopInAnExec())\n"
    )
    env = {**os.environ, "TMPDIR": str(root), "PYTHONPATH": f"{inject}{os.pathsep}{REPO}"}
    env.pop("RENDER_API_KEY", None)
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "render_rotator", "sandbox"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert "error: stopped by SIGTERM" in result.stderr, result.stdout + result.stderr
    assert result.returncode == 1, result.stderr
    assert _leftovers(root, result.stdout) == []
