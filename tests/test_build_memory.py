"""maintenance_work_mem of each index build: small per process, enough for a parallel build,
never above what the target server allows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from render_rotator.postgres.binaries import resolve_client
from render_rotator.postgres.planning import (
    BUILD_MEMORY_MAX,
    BUILD_MEMORY_MIN,
    PARALLEL_BUILD_MEMORY,
    build_memory,
)
from render_rotator.postgres.url import parse_url
from render_rotator.postgres.workers import CopyWorkers
from render_rotator.sandbox.cluster import Cluster

MB = 1 << 20


def test_small_builds_get_the_minimum_and_large_ones_a_share_of_their_size() -> None:
    assert build_memory(0, 1, None) == BUILD_MEMORY_MIN
    assert build_memory(10 * MB, 1, None) == BUILD_MEMORY_MIN
    assert build_memory(320 * MB, 1, None) == 10 * MB
    assert build_memory(100_000 * MB, 1, None) == BUILD_MEMORY_MAX


def test_a_parallel_build_gets_what_postgres_needs_to_start_its_workers() -> None:
    assert build_memory(10 * MB, 2, None) == 2 * PARALLEL_BUILD_MEMORY
    assert build_memory(10 * MB, 3, None) == 3 * PARALLEL_BUILD_MEMORY


def test_never_more_than_the_server_allows() -> None:
    assert build_memory(10 * MB, 2, 16 * MB) == 16 * MB
    assert build_memory(100_000 * MB, 1, 2 * MB) == 2 * MB
    assert build_memory(0, 1, 512 << 10) == 1 * MB  # PostgreSQL's floor for the setting


@pytest.fixture
def workers(pg: Cluster, fresh_db: str, tmp_path: Path) -> Iterator[CopyWorkers]:
    url = parse_url(fresh_db)
    yield CopyWorkers(
        url,
        url,
        client=resolve_client(),
        jobs=2,
        connect_timeout=10,
        command_timeout=60,
        maintenance_work_mem=None,
        split_bytes=None,
        progress=None,
        workdir=tmp_path,
    )


def test_the_server_limit_is_read_from_the_target(
    pg: Cluster, fresh_db: str, workers: CopyWorkers
) -> None:
    name = parse_url(fresh_db).dbname
    pg.execute(f"ALTER DATABASE \"{name}\" SET maintenance_work_mem = '3MB'")
    assert workers.server_build_memory() == 3 * MB
    url = workers.target_ddl_url(1, build_memory(10 * MB, 2, workers.server_build_memory()))
    assert "-cmaintenance_work_mem=3072kB" in dict(url.params)["options"]


def test_the_callers_own_setting_wins(workers: CopyWorkers) -> None:
    workers.maintenance_work_mem = "200MB"
    url = workers.target_ddl_url(0, 4 * MB)
    assert "-cmaintenance_work_mem=200MB" in dict(url.params)["options"]
