"""The pure parts of the rotation: what a target points at and its new value, the journal
(atomic, never a secret, in memory until it must persist), the report, exit codes, names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from render_rotator import secrets
from render_rotator.errors import RotationError
from render_rotator.render import ConnectionInfo
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.naming import is_rotation_of
from render_rotator.rotation.report import PhaseRecord, RotationReport, RotationResult
from render_rotator.rotation.state import CopySummary, PhaseState
from render_rotator.rotation.targets import endpoint, fingerprint, new_value, points_at
from render_rotator.ui import report_lines

# Render's shapes: the internal host is the bare id, the external one has the region domain.
RENDER = ConnectionInfo(
    password="pw0123456789",
    internal_connection_string="postgresql://app_user:pw0123456789@dpg-abc123-a/app_db",
    external_connection_string=(
        "postgresql://app_user:pw0123456789@dpg-abc123-a.oregon-postgres.render.com/app_db"
    ),
)
# The emulator's: both reach 127.0.0.1 on one port, distinguished by host name.
LOCAL = ConnectionInfo(
    password="pw",
    internal_connection_string="postgresql://u_1:pw@localhost:5544/db_1",
    external_connection_string="postgresql://u_1:pw@127.0.0.1:5544/db_1",
)


@pytest.mark.parametrize(
    ("value", "info", "kind"),
    [
        (RENDER.internal_connection_string, RENDER, "internal"),
        (RENDER.external_connection_string, RENDER, "external"),
        # what people paste: an explicit port, sslmode, another scheme spelling, upper case
        ("postgresql://app_user:pw0123456789@dpg-abc123-a:5432/app_db", RENDER, "internal"),
        ("postgres://app_user:OTHERPW@DPG-ABC123-A/app_db?sslmode=require", RENDER, "internal"),
        ("postgresql+psycopg://app_user:x@dpg-abc123-a/app_db", RENDER, "internal"),
        (
            "postgresql://app_user:x@dpg-abc123-a.oregon-postgres.render.com:5432/app_db"
            "?sslmode=require",
            RENDER,
            "external",
        ),
        # the internal id with some domain that is not the external host
        ("postgresql://app_user:x@dpg-abc123-a.internal/app_db", RENDER, "internal"),
        # libpq keyword strings, and a URL without a user (PGUSER supplies it)
        ("host=dpg-abc123-a dbname=app_db user=app_user password=x", RENDER, "internal"),
        ("postgresql://dpg-abc123-a/app_db", RENDER, "internal"),
        (LOCAL.internal_connection_string, LOCAL, "internal"),
        (LOCAL.external_connection_string + "?application_name=web", LOCAL, "external"),
        # not this database
        ("postgresql://app_user:x@dpg-xyz999-a/app_db", RENDER, None),
        ("postgresql://other:x@dpg-abc123-a/app_db", RENDER, None),
        ("postgresql://app_user:x@dpg-abc123-a/other_db", RENDER, None),
        ("postgresql://app_user:x@dpg-abc123-a:6543/app_db", RENDER, None),
        ("postgresql://app_user:x@dpg-abc123-b.oregon-postgres.render.com/app_db", RENDER, None),
        ("postgresql://u_1:pw@127.0.0.1:5545/db_1", LOCAL, None),
        ("postgresql://u_1:pw@localhost.example.com:5544/db_1", LOCAL, None),
        ("mysql://app_user:x@dpg-abc123-a/app_db", RENDER, None),
        ("not a url", RENDER, None),
        ("", RENDER, None),
        (None, RENDER, None),
    ],
)
def test_points_at(value: str | None, info: ConnectionInfo, kind: str | None) -> None:
    assert points_at(value, info) == kind


def test_endpoint_parses_urls_and_keyword_strings() -> None:
    parsed = endpoint("postgresql+asyncpg://u:p@Host.Example.:6000/db")
    assert parsed is not None
    assert (parsed.host, parsed.port, parsed.dbname, parsed.user) == (
        "host.example",
        6000,
        "db",
        "u",
    )
    assert endpoint("host=h port=5433 dbname=d") is not None
    assert endpoint("host=h port=x dbname=d") is None
    assert endpoint("dbname=d") is None  # no host: cannot tell what it reaches


def test_new_value_keeps_what_the_user_added() -> None:
    old = (
        "postgres://app_user:old@dpg-abc123-a/app_db"
        "?sslmode=require&options=-c%20search_path%3Dapp&application_name=my%20app"
    )
    value = new_value(old, LOCAL, "external")
    # Render's new string, the user's scheme, and every parameter, encoded for libpq (%20
    # for a space: libpq does not decode '+')
    assert value == (
        "postgres://u_1:pw@127.0.0.1:5544/db_1"
        "?sslmode=require&options=-c%20search_path%3Dapp&application_name=my%20app"
    )
    assert "+" not in value
    assert points_at(value, LOCAL) == "external"


def test_new_value_defaults() -> None:
    assert new_value(None, LOCAL, "internal") == LOCAL.internal_connection_string
    plain = "postgresql://app_user:old@dpg-abc123-a/app_db"
    assert new_value(plain, LOCAL, "internal") == LOCAL.internal_connection_string
    keywords = "host=dpg-abc123-a dbname=app_db user=app_user"
    assert new_value(keywords, LOCAL, "external") == LOCAL.external_connection_string
    # the new string's own parameters win over the old value's
    with_params = ConnectionInfo("pw", "postgresql://u:pw@h/d?sslmode=require", "")
    assert (
        new_value("postgresql://u:x@o/d?sslmode=disable&a=1", with_params, "internal")
        == "postgresql://u:pw@h/d?sslmode=require&a=1"
    )


def test_fingerprint_recognises_without_storing() -> None:
    value = RENDER.internal_connection_string
    assert fingerprint(value) == fingerprint(value) and fingerprint(value) != fingerprint("x")
    assert "pw0123456789" not in (fingerprint(value) or "") and fingerprint(None) is None


# -- journal ----------------------------------------------------------------------------


def test_journal_roundtrip_and_phase_bookkeeping(tmp_path: Path) -> None:
    path = Journal.path_for(tmp_path / "state", "my app/db")
    assert path.name == "my_app_db.journal.json"
    journal = Journal(path=path, database="my app/db")
    journal.state.old_id = "dpg-1"
    journal.begin("inspect")
    journal.finish("inspect", 0.5)
    journal.begin("freeze")
    journal.finish("freeze", 0.1, skipped=True)
    journal.begin("backup")
    journal.fail("backup", 1.25, "disk full")
    loaded = Journal.find(tmp_path / "state", "my app/db")
    assert loaded is not None and loaded == journal
    assert loaded.unfinished and loaded.is_done("inspect") and loaded.is_done("freeze")
    assert not loaded.is_done("backup")
    assert loaded.last_phase() == "freeze" and loaded.interrupted_phase() == "backup"
    assert loaded.describe() == "last completed phase: freeze, interrupted in: backup"
    assert loaded.phases["backup"] == PhaseState(
        status="failed",
        started_at=loaded.phases["backup"].started_at,
        finished_at=loaded.phases["backup"].finished_at,
        attempts=1,
        seq=3,
        seconds=1.25,
        error="disk full",
    )
    loaded.begin("backup")
    loaded.finish("backup", 0.75)
    assert loaded.phases["backup"].attempts == 2 and loaded.phases["backup"].seconds == 2.0
    loaded.redo("backup", "never-ran")
    assert not loaded.is_done("backup") and loaded.phases["backup"].status == "redo"
    loaded.close("done")
    archived = loaded.archive()
    assert archived is not None and not path.exists()
    assert archived.name.startswith("my_app_db.journal.") and archived.suffix == ".json"
    assert json.loads(archived.read_text())["status"] == "done"
    assert Journal.find(tmp_path / "state", "my app/db") is None


def test_journal_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(path=tmp_path / "db.journal.json", database="db")
    journal.state.rows_copied = 1
    journal.save()
    before = journal.path.read_text()

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)  # the disk fills up mid-write
    journal.state.rows_copied = 2
    with pytest.raises(OSError):
        journal.save()
    assert journal.path.read_text() == before  # the previous version, whole
    assert [p.name for p in tmp_path.iterdir()] == ["db.journal.json"]  # no temp file left


@pytest.mark.parametrize(
    "secret",
    [
        "postgresql://app_user:hunter2hunter2@dpg-abc-a/app",
        "postgres://u:p@h:5432/db?sslmode=require",
        "REGISTERED-SECRET-VALUE-42",
        # a quote inside the password is escaped in the journal's JSON text
        'postgresql://app_user:pa"ss@dpg-abc-a/app',
        "password=hunter2hunter2",
    ],
)
def test_journal_refuses_to_store_a_secret(tmp_path: Path, secret: str) -> None:
    secrets.register("REGISTERED-SECRET-VALUE-42")  # as passwords are, the moment we learn them
    journal = Journal(path=tmp_path / "db.journal.json", database="db")
    journal.save()
    before = journal.path.read_text()
    journal.state.copy = CopySummary(method="pg_restore", skipped=[f"COMMENT ... {secret}"])
    with pytest.raises(RotationError, match="refusing to write a connection string or password"):
        journal.save()
    assert journal.path.read_text() == before
    # the check runs even for a journal kept in memory
    with pytest.raises(RotationError):
        Journal(
            path=tmp_path / "other.json", database="db", persist=False, state=journal.state
        ).save()


def test_journal_in_memory_until_told_to_persist(tmp_path: Path) -> None:
    path = tmp_path / "state" / "db.journal.json"
    journal = Journal(path=path, database="db", persist=False)
    journal.begin("inspect")
    journal.finish("inspect", 0.1)
    journal.close("noop")
    assert journal.archive() is None
    assert not (tmp_path / "state").exists()
    journal.status = "running"
    journal.persist = True
    journal.save()
    assert json.loads(path.read_text())["phases"]["inspect"]["status"] == "done"


def test_journal_load_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "db.journal.json"
    path.write_text("{not json")
    with pytest.raises(RotationError, match="cannot read rotation journal") as info:
        Journal.load(path)
    assert "rotate --restart" in str(info.value)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(RotationError, match="has version 99, which this render-rotator") as info:
        Journal.load(path)
    assert "rotate --restart" in str(info.value)


# -- report and exit codes --------------------------------------------------------------


def _report(**fields: object) -> RotationReport:
    report = RotationReport(database="app-db")
    for key, value in fields.items():
        setattr(report, key, value)
    return report


def test_report_to_dict_and_lines() -> None:
    report = _report(
        rotated=True,
        strategy="create-first",
        freeze="suspend",
        old={"id": "dpg-old", "name": "app-db"},
        new={"id": "dpg-new", "name": "app-db-20250101", "expires_at": None},
        phases=[PhaseRecord("inspect", "done", 0.12345), PhaseRecord("retire", "skipped", 0)],
        freeze_seconds=12.3456,
        rows_copied=1000,
        bytes_copied=65536,
        backup={"path": "/b/app.dump", "sha256": "ab" * 32, "size_bytes": 4096},
        targets=[{"target": "srv-1:DATABASE_URL", "status": "repointed"}],
        deploys=[
            {"service_id": "srv-1", "deploy_id": "dep-1", "status": "live", "rollback": False}
        ],
        message="rotated to dpg-new",
        notes=["kept the old database dpg-old (keep_old)"],
        journal="/s/app-db.journal.x.json",
    )
    data = report.to_dict()
    assert data == {
        "ok": True,
        "rotated": True,
        "dry_run": False,
        "due": True,
        "database": "app-db",
        "strategy": "create-first",
        "freeze": "suspend",
        "old": {"id": "dpg-old", "name": "app-db"},
        "new": {"id": "dpg-new", "name": "app-db-20250101", "expires_at": None},
        "phases": [
            {"name": "inspect", "status": "done", "seconds": 0.123},
            {"name": "retire", "status": "skipped", "seconds": 0},
        ],
        "freeze_seconds": 12.346,
        "rows_copied": 1000,
        "bytes_copied": 65536,
        "backup": {"path": "/b/app.dump", "sha256": "ab" * 32, "size_bytes": 4096},
        "verification": None,
        "targets": [{"target": "srv-1:DATABASE_URL", "status": "repointed"}],
        "deploys": [
            {"service_id": "srv-1", "deploy_id": "dep-1", "status": "live", "rollback": False}
        ],
        "plan": [],
        "message": "rotated to dpg-new",
        "exit_code": 0,
        "notes": ["kept the old database dpg-old (keep_old)"],
        "decisions": [],
        "journal": "/s/app-db.journal.x.json",
    }
    json.dumps(data)  # one JSON object, as --json prints it
    lines = report_lines(report.to_dict())
    assert lines[0] == "app-db: rotated to dpg-new"
    for needle in (
        "  new:          dpg-new (app-db-20250101), expires never",
        "  write freeze: 12.3s",
        "  copied:       1,000 rows, 64.0 KiB",
        f"  backup:       /b/app.dump (sha256 {'ab' * 32})",
        "  deploy:       srv-1 dep-1: live",
        "  note: kept the old database dpg-old (keep_old)",
    ):
        assert needle in lines, needle


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], 0),
        ([0, 0], 0),
        ([2], 2),
        ([3], 3),
        ([0, 3, 2], 3),
        ([3, 1], 1),
        ([2, 1, 0], 1),
    ],
)
def test_exit_code_of_several_databases(codes: list[int], expected: int) -> None:
    result = RotationResult([_report(exit_code=c, ok=c == 0) for c in codes])
    assert result.exit_code == expected
    assert result.ok is (expected == 0)


def test_result_to_dict_one_or_many() -> None:
    one = RotationResult([_report(rotated=True)])
    assert one.to_dict()["database"] == "app-db"
    many = RotationResult([_report(rotated=True), _report(ok=False, exit_code=3)])
    data = many.to_dict()
    assert data["ok"] is False and data["rotated"] is True and data["exit_code"] == 3
    assert [d["exit_code"] for d in data["databases"]] == [0, 3]


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "candidate", "template", "expected"),
    [
        ("myapp-db", "myapp-db", None, True),
        ("myapp-db", "myapp-db-20250101", None, True),
        ("myapp-db", "myapp-db-20250101-20250201", None, True),
        ("myapp-db-20250101", "myapp-db-20250301", None, True),
        ("myapp-db", "myapp-db-2", None, False),
        ("myapp-db", "myapp-db-99999999", None, False),  # not a date
        ("myapp-db", "other-db-20250101", None, False),
        ("myapp-db", "myapp-db-v20250101", "{name}-v{date}", True),
        ("myapp-db", "myapp-db-v20250101-v20250201", "{name}-v{date}", True),
        ("myapp-db", "myapp-db-v20250101", None, False),
        ("myapp-db", "prod-20250101", "prod-{date}", True),
        ("myapp-db", "prod-2025", "prod-{date}", False),
    ],
)
def test_is_rotation_of(
    configured: str, candidate: str, template: str | None, expected: bool
) -> None:
    assert is_rotation_of(configured, candidate, template) is expected


def test_journal_accepts_redacted_urls_in_error_text(tmp_path: Path) -> None:
    """Errors name databases by redacted URL; that must not look like a leaked password."""
    journal = Journal(path=tmp_path / "j.json", database="app-db")
    journal.error = "the target postgresql://app:***@127.0.0.1:5432/app is not empty"
    journal.save()
    assert "app:***@" in (tmp_path / "j.json").read_text()
    journal.error = "cannot connect to postgresql://app:hunter22@127.0.0.1:5432/app"
    with pytest.raises(RotationError):
        journal.save()


@pytest.mark.parametrize(
    "secret",
    [
        'pw"with\\quotes-and-backslash',  # in the JSON text: pw\"with\\\\quotes...
        "pässwörd-ünïcode-42",  # in the JSON text: p\\u00e4ssw...
    ],
)
def test_journal_refuses_a_secret_that_json_escaping_would_hide(
    tmp_path: Path, secret: str
) -> None:
    secrets.register(secret)
    journal = Journal(path=tmp_path / "db.journal.json", database="db")
    journal.state.copy = CopySummary(method="pg_restore", skipped=[f"COMMENT ... {secret}"])
    with pytest.raises(RotationError, match="refusing to write a connection string or password"):
        journal.save()
    assert not journal.path.exists()
