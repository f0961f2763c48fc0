"""The engine with an application user: the target URL's user is not the admin.

On PostgreSQL 15+ only a database's owner (or a superuser) may create objects in its public
schema, so a database the admin creates must end up owned by the user that restores into it.
Run on the embedded PostgreSQL 18 with a separate non-superuser target role, exactly as the
README's library example is written.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from render_rotator import verify_copy
from render_rotator.cli import cli
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import make_rich_database, unique_name

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_library_examples() -> list[str]:
    """The README's library example, split into its two halves (migrate; manager steps)."""
    text = README.read_text()
    block = text[text.index("As a library, exactly as") :]
    code = re.search(r"```python\n(.*?)```", block, flags=re.S)
    assert code is not None
    first, second = code.group(1).split("manager = DatabaseManager(", 1)
    imports = first.split("\n\n", 1)[0]
    return [first, imports + "\n\nmanager = DatabaseManager(" + second]


@pytest.fixture
def app_user(pg18: Cluster) -> Iterator[tuple[str, str]]:
    """A login role that is not a superuser and may not create databases."""
    name, password = unique_name("app"), secrets.token_hex(12)
    pg18.create_role(name, password)
    yield name, password
    pg18.execute(f'DROP OWNED BY "{name}" CASCADE', dbname="postgres")
    pg18.execute(f'DROP ROLE IF EXISTS "{name}"')


def _owner(cluster: Cluster, dbname: str) -> str:
    rows = cluster.query(
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{dbname}'"
    )
    return str(rows[0][0])


def _drop(cluster: Cluster, name: str) -> None:
    cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_readme_library_example_with_an_application_user(
    pg18: Cluster, app_user: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = app_user
    assert pg18.query(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{user}'") == [(False,)]
    source_db = unique_name("readmesrc")
    source = make_rich_database(pg18, source_db)
    target = pg18.url("new_database", user=user, password=password)
    replacements = {
        "postgresql://user:pass@source-db:5432/db": source,
        "postgresql://user:pass@target-db:5432/new_database": target,
        "postgresql://admin:pass@target-db:5432/postgres": pg18.admin_url,
    }
    _drop(pg18, "new_database")
    monkeypatch.chdir(tmp_path)
    try:
        for code in readme_library_examples():
            for placeholder, real in replacements.items():
                code = code.replace(placeholder, real)
            assert "source-db" not in code and "target-db" not in code
            scope: dict[str, object] = {}
            exec(compile(code, "README-example", "exec"), scope)  # noqa: S102 - the README's code
            if "success" in scope:
                assert scope["success"] is True
            assert _owner(pg18, "new_database") == user
            report = verify_copy(source, target)
            assert report.equal, report.differences
            assert report.source.row_counts["public.customers"] == 500
            # the application user owns what it restored, and can write to it
            tables = pg18.query(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
                dbname="new_database",
            )
            assert tables == [(user,)]
            _drop(pg18, "new_database")
    finally:
        _drop(pg18, "new_database")
        _drop(pg18, source_db)


def test_cli_migrate_create_db_for_an_application_user(
    pg18: Cluster, app_user: tuple[str, str]
) -> None:
    user, password = app_user
    source_db, target_db = unique_name("clisrc"), unique_name("clinew")
    source = make_rich_database(pg18, source_db)
    try:
        result = CliRunner().invoke(
            cli,
            ["migrate", "--create-db", target_db, "--json"],
            env={
                "RENDER_ROTATOR_SOURCE_URL": source,
                "RENDER_ROTATOR_TARGET_URL": pg18.url(target_db, user=user, password=password),
                "RENDER_ROTATOR_ADMIN_URL": pg18.admin_url,
            },
        )
        assert result.exit_code == 0, result.output
        assert _owner(pg18, target_db) == user
    finally:
        _drop(pg18, target_db)
        _drop(pg18, source_db)


def test_admin_as_target_keeps_the_admin_as_owner(pg18: Cluster) -> None:
    from render_rotator import migrate_database

    source_db, target_db = unique_name("adsrc"), unique_name("adnew")
    source = make_rich_database(pg18, source_db)
    try:
        assert migrate_database(source, pg18.url(target_db), pg18.admin_url, target_db)
        assert _owner(pg18, target_db) == pg18.superuser
    finally:
        _drop(pg18, target_db)
        _drop(pg18, source_db)


def test_migrate_refuses_a_target_that_is_not_empty_and_clean_empties_it(pg18: Cluster) -> None:
    source_db, target_db = unique_name("clsrc"), unique_name("cltgt")
    source = make_rich_database(pg18, source_db)
    target = pg18.create_database(target_db)
    pg18.execute(
        "CREATE TABLE leftover (id int); INSERT INTO leftover VALUES (1)", dbname=target_db
    )
    env = {"RENDER_ROTATOR_SOURCE_URL": source, "RENDER_ROTATOR_TARGET_URL": target}
    try:
        refused = CliRunner().invoke(cli, ["migrate"], env=env)
        assert refused.exit_code != 0
        assert "not empty" in refused.output and "--clean" in refused.output
        assert pg18.query("SELECT count(*) FROM leftover", dbname=target_db) == [(1,)]

        cleaned = CliRunner().invoke(cli, ["migrate", "--clean", "--json"], env=env)
        assert cleaned.exit_code == 0, cleaned.output
        left = pg18.query("SELECT to_regclass('public.leftover')::text", dbname=target_db)
        assert left == [(None,)]
        assert verify_copy(source, target).equal
    finally:
        _drop(pg18, target_db)
        _drop(pg18, source_db)
