"""The config loader: the example file, defaults, overrides, and one clear line per mistake."""

from __future__ import annotations

import re
import textwrap
import tomllib
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest

from render_rotator.config import (
    CONFIG_ENV_VAR,
    DEFAULTS,
    Config,
    Settings,
    TargetConfig,
    config_path,
    documented_keys,
    load_config,
)
from render_rotator.errors import ConfigError, UsageError
from render_rotator.rotation.naming import base_name, new_name

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
_PLACEHOLDER = re.compile(r'"(tea|usr|srv|evg|dpg)-\.\.\."')


def filled_example(directory: Path) -> Path:
    """config.example.toml with its placeholder ids filled in, as a user's copy would be."""
    path = directory / "render-rotator.toml"
    path.write_text(_PLACEHOLDER.sub(r'"\1-example"', EXAMPLE.read_text(encoding="utf-8")))
    return path


MINIMAL = """
[[database]]
name = "app-db"
"""


def write(directory: Path, text: str, name: str = "render-rotator.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    """Load `path`, expecting a ConfigError; return its one-line message."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert info.value.exit_code == 2
    assert str(path) in message, message
    return message


def error_for(tmp_path: Path, text: str) -> str:
    return config_error(write(tmp_path, text))


def assert_names(message: str, where: str, expected: str) -> None:
    """The message names the file, then the dotted key, and explains with `expected`."""
    assert f"render-rotator.toml: {where}: " in message, message
    assert expected in message, message


# --- the example file ------------------------------------------------------------------------


def test_example_file_loads_with_the_documented_values(tmp_path: Path) -> None:
    copy = filled_example(tmp_path)
    config = load_config(copy)
    assert config.path == copy
    assert config.render.owner_id == "tea-example"
    here = copy.parent
    assert config.defaults == Settings(
        connect_timeout=30,
        command_timeout=600,
        rotate_within_days=7,
        strategy="auto",
        freeze="suspend",
        backup_dir=here / "backups",
        keep_old=False,
        jobs=2,
        state_dir=here / ".render-rotator",
        deploy_timeout=900,
        provision_timeout=900,
        notify_url=None,
    )
    first, second = config.databases
    assert (first.name, first.id, first.new_name, first.version) == (
        "myapp-db",
        None,
        "myapp-db-{date}",
        "18",
    )
    assert first.targets == (TargetConfig(service="srv-example", key="DATABASE_URL"),)
    assert first.settings == config.defaults

    assert (second.name, second.id, second.new_name, second.version) == (
        None,
        "dpg-example",
        "{name}-{date}",
        None,
    )
    assert second.targets == (
        TargetConfig(env_group="evg-example", key="REPORTS_DATABASE_URL", connection="external"),
        TargetConfig(service="srv-example", key="REPORTS_DB", connection="internal"),
    )
    assert second.settings.strategy == "delete-first"
    assert second.settings.freeze == "readonly"
    assert second.settings.jobs == 1
    assert second.settings.keep_old is True
    assert second.settings.command_timeout == 1800
    assert second.settings.backup_dir == here / "backups" / "reports"
    assert second.settings.connect_timeout == 30  # not overridden: from [defaults]


def test_example_documents_every_key_with_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for key in documented_keys():
        leaf = key.rsplit(".", 1)[1]
        assigned = [line for line in lines if re.match(rf"\s*#?\s*{leaf}\s*=", line)]
        assert assigned, f"{key} is not shown in config.example.toml"
        assert any("#" in line.split("=", 1)[1] for line in assigned), f"{key} has no comment"


def test_example_is_valid_toml_with_the_contract_defaults() -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert document["defaults"]["connect_timeout"] == DEFAULTS.connect_timeout
    assert document["defaults"]["command_timeout"] == DEFAULTS.command_timeout
    assert document["defaults"]["rotate_within_days"] == DEFAULTS.rotate_within_days
    assert document["defaults"]["strategy"] == DEFAULTS.strategy
    assert document["defaults"]["freeze"] == DEFAULTS.freeze
    assert document["defaults"]["backup_dir"] == str(DEFAULTS.backup_dir)
    assert document["defaults"]["keep_old"] == DEFAULTS.keep_old
    assert document["defaults"]["jobs"] == DEFAULTS.jobs
    assert document["defaults"]["verify"] == DEFAULTS.verify == "content"


# --- defaults, overrides, paths --------------------------------------------------------------


def test_contract_defaults() -> None:
    assert DEFAULTS.connect_timeout == 30
    assert DEFAULTS.command_timeout == 600
    assert DEFAULTS.rotate_within_days == 7
    assert DEFAULTS.strategy == "auto"
    assert DEFAULTS.freeze == "suspend"
    assert DEFAULTS.backup_dir == Path("backups")
    assert DEFAULTS.keep_old is False
    assert DEFAULTS.jobs == 2
    assert DEFAULTS.state_dir == Path(".render-rotator")
    assert DEFAULTS.deploy_timeout == 900
    assert DEFAULTS.provision_timeout == 900
    assert DEFAULTS.notify_url is None


def test_minimal_file_gets_defaults_resolved_next_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.chdir("/")  # relative paths must not depend on the working directory
    config = load_config(path)
    assert config.render.owner_id is None
    assert config.defaults.backup_dir == tmp_path.resolve() / "backups"
    assert config.defaults.state_dir == tmp_path.resolve() / ".render-rotator"
    (db,) = config.databases
    assert db.name == "app-db" and db.id is None and db.new_name is None and db.version is None
    assert db.targets == ()  # allowed: warning about it is the caller's business
    assert db.settings == config.defaults
    for name in ("connect_timeout", "command_timeout", "strategy", "freeze", "keep_old", "jobs"):
        assert getattr(db.settings, name) == getattr(DEFAULTS, name)


def test_target_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[database.target]]\nservice = "srv-a"\n')
    (target,) = load_config(path).databases[0].targets
    assert target == TargetConfig(
        service="srv-a", env_group=None, key="DATABASE_URL", connection="internal"
    )
    assert target.label == "srv-a:DATABASE_URL"


def test_per_database_overrides_win_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [defaults]
        jobs = 4
        freeze = "maintenance"
        connect_timeout = 12.5
        notify_url = "https://hooks.example.com/x"

        [[database]]
        name = "a"
        jobs = 8
        rotate_within_days = 0
        notify_url = ""
        state_dir = "/var/lib/rotator"

        [[database]]
        name = "b"
        """,
    )
    config = load_config(path)
    a, b = config.databases
    assert config.defaults.jobs == 4
    assert a.settings.jobs == 8
    assert a.settings.rotate_within_days == 0
    assert a.settings.freeze == "maintenance"  # inherited from [defaults]
    assert a.settings.connect_timeout == 12.5
    assert a.settings.notify_url is None  # "" switches it off
    assert a.settings.state_dir == Path("/var/lib/rotator")
    assert b.settings == config.defaults
    assert b.settings.notify_url == "https://hooks.example.com/x"


def test_ints_are_accepted_where_floats_are_wanted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[defaults]\ncommand_timeout = 5\n" + MINIMAL))
    assert config.defaults.command_timeout == 5.0
    assert isinstance(config.defaults.command_timeout, float)


def test_version_as_integer_is_normalised_to_renders_string(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "version = 17\n"))
    assert config.databases[0].version == "17"


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        config.databases[0].settings.jobs = 3  # type: ignore[misc]


# --- finding the file ------------------------------------------------------------------------


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL, name="elsewhere.toml")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    monkeypatch.chdir(tmp_path.parent)
    assert config_path() == path
    assert load_config().path == path.resolve()


def test_argument_wins_over_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = write(tmp_path, MINIMAL, name="chosen.toml")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "missing.toml"))
    assert load_config(str(chosen)).path == chosen.resolve()


def test_default_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.path == (tmp_path / "render-rotator.toml").resolve()


def test_missing_default_file_says_how_to_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("render-rotator.toml: ")
    assert "config.example.toml" in message
    assert "RENDER_ROTATOR_CONFIG" in message
    assert "-c" in message


def test_missing_file_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(missing))
    message = config_error(missing)
    assert "not found" in message
    with pytest.raises(ConfigError, match="from RENDER_ROTATOR_CONFIG"):
        load_config()


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "directory" in config_error(tmp_path)


def test_config_error_is_a_usage_error() -> None:
    assert issubclass(ConfigError, UsageError)


# --- errors: one line, file and dotted key named ---------------------------------------------


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[defaults]\njobs = = 2\n[[database]]\nname = "a"\n')
    assert "invalid TOML" in message
    assert "line 2" in message and "column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "render-rotator.toml"
    path.write_bytes(b'[[database]]\nname = "\xff"\n')
    assert "UTF-8" in config_error(path)


@pytest.mark.parametrize(
    ("text", "where", "suggestion"),
    [
        (
            "[defaults]\nconect_timeout = 3\n" + MINIMAL,
            "defaults.conect_timeout",
            "connect_timeout",
        ),
        ("[render]\nowner = 'tea-x'\n" + MINIMAL, "render.owner", "owner_id"),
        ("[[databases]]\nname = 'a'\n", "databases", "database"),
        (MINIMAL + "nmae = 'x'\n", "database[0].nmae", "name"),
        (MINIMAL + "[[database.targets]]\nservice = 'srv-a'\n", "database[0].targets", "target"),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\nconection = 'external'\n",
            "database[0].target[0].conection",
            "connection",
        ),
    ],
)
def test_unknown_keys_suggest_the_closest(
    tmp_path: Path, text: str, where: str, suggestion: str
) -> None:
    message = error_for(tmp_path, text)
    assert f"render-rotator.toml: {where}: unknown key" in message
    assert f'did you mean "{suggestion}"?' in message


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[render]\nzzz = 1\n" + MINIMAL)
    assert "render.zzz: unknown key" in message
    assert "owner_id" in message


def test_key_in_the_wrong_table_says_where_it_belongs(tmp_path: Path) -> None:
    message = error_for(tmp_path, "jobs = 3\n" + MINIMAL)
    assert "render-rotator.toml: jobs: unknown key" in message
    assert "[defaults]" in message
    message = error_for(tmp_path, MINIMAL + "[[database.target]]\nservice = 'srv-a'\njobs = 1\n")
    assert "database[0].target[0].jobs: unknown key" in message
    assert "[defaults] or a [[database]] table" in message
    message = error_for(tmp_path, MINIMAL + "service = 'srv-a'\n")
    assert "database[0].service: unknown key" in message
    assert "[[database.target]]" in message
    message = error_for(tmp_path, "[defaults]\nname = 'a'\n" + MINIMAL)
    assert "defaults.name: unknown key" in message
    assert "[[database]]" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[render]\napi_key = 'rnd_secret'\n" + MINIMAL, "render.api_key"),
        ("render_api_key = 'rnd_secret'\n" + MINIMAL, "render_api_key"),
        ("[defaults]\napi_key = 'rnd_secret'\n" + MINIMAL, "defaults.api_key"),
        (MINIMAL + "RENDER_API_KEY = 'rnd_secret'\n", "database[0].RENDER_API_KEY"),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\napi-key = 'rnd_secret'\n",
            "database[0].target[0].api-key",
        ),
    ],
)
def test_api_key_is_refused_anywhere_and_never_echoed(
    tmp_path: Path, text: str, where: str
) -> None:
    message = error_for(tmp_path, text)
    assert f"render-rotator.toml: {where}: " in message
    assert "RENDER_API_KEY" in message
    assert "must not be in the config file" in message
    assert "rnd_secret" not in message


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("[defaults]\njobs = true\n", "defaults.jobs", "must be an integer, got boolean true"),
        ("[defaults]\njobs = 2.5\n", "defaults.jobs", "must be an integer, got float 2.5"),
        ("[defaults]\njobs = '2'\n", "defaults.jobs", 'must be an integer, got "2"'),
        (
            "[defaults]\nrotate_within_days = false\n",
            "defaults.rotate_within_days",
            "must be an integer, got boolean false",
        ),
        (
            "[defaults]\nconnect_timeout = true\n",
            "defaults.connect_timeout",
            "must be a number of seconds, got boolean true",
        ),
        (
            "[defaults]\ncommand_timeout = '600'\n",
            "defaults.command_timeout",
            'must be a number of seconds, got "600"',
        ),
        ("[defaults]\nkeep_old = 'no'\n", "defaults.keep_old", 'must be true or false, got "no"'),
        ("[defaults]\nkeep_old = 0\n", "defaults.keep_old", "must be true or false, got integer 0"),
        ("[defaults]\nbackup_dir = 5\n", "defaults.backup_dir", "must be a string, got integer 5"),
        ("[defaults]\nbackup_dir = ''\n", "defaults.backup_dir", "must not be empty"),
        ("[defaults]\nnotify_url = 1\n", "defaults.notify_url", "must be a string"),
        ("[render]\nowner_id = 7\n", "render.owner_id", "must be a string, got integer 7"),
        ("render = 'x'\n", "render", 'must be a table ([render]), got "x"'),
        ("defaults = [1]\n", "defaults", "must be a table ([defaults]), got an array"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, where: str, expected: str) -> None:
    message = error_for(tmp_path, text + MINIMAL)
    assert f"render-rotator.toml: {where}: {expected}" in message


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("[[database]]\nname = 5\n", "database[0].name", "must be a string, got integer 5"),
        (MINIMAL + "version = true\n", "database[0].version", "got boolean true"),
        (MINIMAL + "version = '18.1'\n", "database[0].version", 'major version such as "18"'),
        (MINIMAL + "version = '9'\n", "database[0].version", "11 and newer"),
        (MINIMAL + "new_name = 3\n", "database[0].new_name", "must be a string, got integer 3"),
        (MINIMAL + "jobs = 0\n", "database[0].jobs", "must be from 1 to 64, got 0"),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\nkey = 1\n",
            "database[0].target[0].key",
            "must be a string, got integer 1",
        ),
        ("[database]\nname = 'a'\n", "database", "write [[database]], not [database]"),
        ("database = 'a'\n", "database", 'must be an array of tables ([[database]]), got "a"'),
        (
            MINIMAL + "[database.target]\nservice = 'srv-a'\n",
            "database[0].target",
            "write [[database.target]], not [database.target]",
        ),
    ],
)
def test_wrong_types_in_databases(tmp_path: Path, text: str, where: str, expected: str) -> None:
    assert_names(error_for(tmp_path, text), where, expected)


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\nconnection = 'public'\n",
            "database[0].target[0].connection",
            'must be "internal" or "external", got "public"',
        ),
        (
            "[defaults]\nstrategy = 'fast'\n" + MINIMAL,
            "defaults.strategy",
            'must be "auto", "create-first" or "delete-first", got "fast"',
        ),
        (
            MINIMAL + "freeze = 'off'\n",
            "database[0].freeze",
            'must be "suspend", "maintenance", "readonly" or "none", got "off"',
        ),
        (
            "[defaults]\nfreeze = false\n" + MINIMAL,
            "defaults.freeze",
            "got boolean false",
        ),
        (
            MINIMAL + "verify = 'checksums'\n",
            "database[0].verify",
            'must be "content" or "counts", got "checksums"',
        ),
    ],
)
def test_bad_enum_values(tmp_path: Path, text: str, where: str, expected: str) -> None:
    assert_names(error_for(tmp_path, text), where, expected)


def test_enum_error_matches_the_contract_example(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[[database.target]]\nservice = 'srv-a'\n"
        "[[database.target]]\nservice = 'srv-b'\nconnection = 'public'\n"
    )
    message = error_for(tmp_path, text)
    assert message == (
        f"{tmp_path / 'render-rotator.toml'}: database[0].target[1].connection: "
        'must be "internal" or "external", got "public"'
    )


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("connect_timeout", "0", "must be between 0 and 604800 seconds (a week), got 0"),
        ("command_timeout", "-1", "must be between 0 and 604800 seconds (a week), got -1"),
        ("deploy_timeout", "-0.5", "must be between 0 and 604800 seconds (a week), got -0.5"),
        ("provision_timeout", "0.0", "must be between 0 and 604800 seconds (a week), got 0"),
        ("connect_timeout", "inf", "must be a finite number between 0 and 604800 seconds"),
        ("command_timeout", "nan", "must be a finite number between 0 and 604800 seconds"),
        ("command_timeout", "1e300", "must be between 0 and 604800 seconds (a week), got 1e+300"),
        ("deploy_timeout", "604801", "must be between 0 and 604800 seconds (a week), got 604801"),
        ("rotate_within_days", "-1", "must be from 0 to 365, got -1"),
        ("rotate_within_days", "366", "must be from 0 to 365, got 366"),
        ("jobs", "0", "must be from 1 to 64, got 0"),
        ("jobs", "-3", "must be from 1 to 64, got -3"),
        ("jobs", "100000", "must be from 1 to 64, got 100000"),
    ],
)
def test_out_of_range_numbers_name_the_allowed_range(
    tmp_path: Path, setting: str, value: str, expected: str
) -> None:
    message = error_for(tmp_path, f"[defaults]\n{setting} = {value}\n" + MINIMAL)
    assert f"render-rotator.toml: defaults.{setting}: {expected}" in message


def test_lease_ttl_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[defaults]\nlease_ttl = 5\n\n[[database]]\nname = "db"\n')
    with pytest.raises(ConfigError, match="lease_ttl: must be at least 10 seconds, got 5"):
        load_config(path)
    path.write_text('[defaults]\nlease_ttl = 30\n\n[[database]]\nname = "db"\n')
    assert load_config(path).databases[0].settings.lease_ttl == 30


def test_notify_url_must_be_http_and_is_not_echoed(tmp_path: Path) -> None:
    for bad in (
        "ftp://example.com/x",
        "hooks.example.com/TOKEN",
        "https://:443/TOKEN",
        "http://h:99999/TOKEN",
    ):
        message = error_for(tmp_path, f"[defaults]\nnotify_url = '{bad}'\n" + MINIMAL)
        assert "defaults.notify_url: must be an http:// or https:// URL" in message
        assert bad not in message


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("[render]\n", "database", "missing required key"),
        ("database = []\n", "database", "at least one [[database]]"),
        ("[[database]]\nversion = '18'\n", "database[0]", 'missing required key "name"'),
        (
            MINIMAL + "[[database]]\nnew_name = 'x'\n",
            "database[1]",
            'missing required key "name" (or "id"',
        ),
        (
            MINIMAL + "[[database.target]]\nkey = 'DATABASE_URL'\n",
            "database[0].target[0]",
            'missing required key "service" (or "env_group")',
        ),
    ],
)
def test_missing_required_keys(tmp_path: Path, text: str, where: str, expected: str) -> None:
    assert_names(error_for(tmp_path, text), where, expected)


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("[[database]]\nname = 'a'\nid = 'dpg-a'\n", "database[0]", "not both"),
        ("[[database]]\nid = 'srv-a'\n", "database[0].id", 'Render Postgres id ("dpg-...")'),
        ("[[database]]\nid = 'dpg-'\n", "database[0].id", 'got "dpg-"'),
        ("[[database]]\nname = 'dpg-abc'\n", "database[0].name", 'write id = "dpg-abc"'),
        ("[[database]]\nname = ''\n", "database[0].name", "must not be empty"),
        ("[[database]]\nname = ' a'\n", "database[0].name", "leading or trailing whitespace"),
        (
            MINIMAL + "[[database.target]]\nservice = 'evg-a'\n",
            "database[0].target[0].service",
            'must be a Render service id ("srv-..."), got "evg-a"',
        ),
        (
            MINIMAL + "[[database.target]]\nenv_group = 'srv-a'\n",
            "database[0].target[0].env_group",
            'must be a Render env group id ("evg-..."), got "srv-a"',
        ),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\nenv_group = 'evg-a'\n",
            "database[0].target[0]",
            'give either "service" or "env_group", not both',
        ),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\nkey = 'A B'\n",
            "database[0].target[0].key",
            "without spaces",
        ),
        (
            MINIMAL + "[[database.target]]\nservice = 'srv-a'\n"
            "[[database.target]]\nservice = 'srv-a'\n",
            "database[0].target[1]",
            "duplicate target srv-a:DATABASE_URL (also database[0].target[0])",
        ),
    ],
)
def test_ids_and_targets_are_validated(
    tmp_path: Path, text: str, where: str, expected: str
) -> None:
    assert_names(error_for(tmp_path, text), where, expected)


def test_each_target_is_validated_not_just_the_first(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[[database.target]]\nservice = 'srv-a'\n"
        "[[database.target]]\nenv_group = 'evg-b'\n"
        "[[database.target]]\nservice = 'oops'\n"
    )
    assert "database[0].target[2].service" in error_for(tmp_path, text)


def test_duplicate_database_names(tmp_path: Path) -> None:
    text = "[[database]]\nname = 'a'\n[[database]]\nname = 'b'\n[[database]]\nname = 'a'\n"
    message = error_for(tmp_path, text)
    assert 'database[2].name: duplicate database name "a" (also in database[0])' in message


def test_duplicate_database_ids(tmp_path: Path) -> None:
    text = "[[database]]\nid = 'dpg-a'\n[[database]]\nid = 'dpg-a'\n"
    assert 'database[1].id: duplicate database id "dpg-a"' in error_for(tmp_path, text)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{when}", "unknown placeholder {when}"),
        ("{}", "unknown placeholder {}"),
        ("{date:%Y}", "unknown placeholder {date}"),
        ("x-{date", "bad template"),
        ("x}", "bad template"),
    ],
)
def test_bad_new_name_templates(tmp_path: Path, template: str, expected: str) -> None:
    message = error_for(tmp_path, MINIMAL + f"new_name = '{template}'\n")
    assert f"database[0].new_name: {expected}" in message


def test_long_values_are_shortened_in_messages(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[defaults]\nstrategy = '" + "x" * 500 + "'\n" + MINIMAL)
    assert len(message) < 300
    assert "..." in message


def test_relative_config_path_is_named_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[defaults]\njobs = 0\n" + MINIMAL, name="mine.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("mine.toml")
    assert str(info.value).startswith("mine.toml: defaults.jobs: ")


# --- new names -------------------------------------------------------------------------------


TODAY = date(2025, 3, 7)


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ("myapp-db", "myapp-db-20250307"),
        ("myapp-db-20250205", "myapp-db-20250307"),  # repeated rotation: suffix replaced
        ("myapp-db-20250105-20250205", "myapp-db-20250307"),  # earlier growth undone
        ("shop-12345678", "shop-12345678-20250307"),  # not a date: kept
        ("20250205", "20250205-20250307"),  # nothing before the suffix: kept
    ],
)
def test_default_new_name(old: str, expected: str) -> None:
    assert new_name(None, old, TODAY) == expected


def test_new_name_template() -> None:
    assert new_name("myapp-db-{date}", "anything", TODAY) == "myapp-db-20250307"
    assert new_name("{name}-{date}", "app-20250101", TODAY) == "app-20250307"
    assert new_name("{name}_v2", "app", TODAY) == "app_v2"
    assert new_name("{{x}}-{date}", "app", TODAY) == "{x}-20250307"


def test_repeated_rotations_keep_the_name_short() -> None:
    name = "myapp-db"
    for month in range(1, 13):
        name = new_name(None, name, date(2025, month, 1))
    assert name == "myapp-db-20251201"


def test_base_name() -> None:
    assert base_name("db-20240229") == "db"  # leap day is a date
    assert base_name("db-20230229") == "db-20230229"  # not a date
    assert base_name("db") == "db"


def test_new_name_from_file_renders(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "new_name = '{name}-{date}'\n"))
    template = config.databases[0].new_name
    assert new_name(template, "app-db-20250101", TODAY) == "app-db-20250307"


# --- find_database and documented keys -------------------------------------------------------


def test_find_database_by_name_or_id(tmp_path: Path) -> None:
    config = load_config(filled_example(tmp_path))
    assert config.find_database("myapp-db").name == "myapp-db"
    assert config.find_database("dpg-example").id == "dpg-example"
    assert config.find_database("dpg-example").label == "dpg-example"


def test_find_unknown_database_lists_configured_ones(tmp_path: Path) -> None:
    copy = filled_example(tmp_path)
    config = load_config(copy)
    with pytest.raises(ConfigError) as info:
        config.find_database("nope")
    message = str(info.value)
    assert "\n" not in message
    assert str(copy) in message
    assert '"nope"' in message
    assert '"myapp-db", "dpg-example"' in message


def test_documented_keys_cover_every_setting_and_table() -> None:
    keys = documented_keys()
    assert len(keys) == len(set(keys))
    assert "render.owner_id" in keys
    assert "database.name" in keys and "database.id" in keys
    assert "database.new_name" in keys and "database.version" in keys
    for target_key in ("service", "env_group", "key", "connection"):
        assert f"database.target.{target_key}" in keys
    for field in fields(Settings):
        assert f"defaults.{field.name}" in keys
        assert f"database.{field.name}" in keys
    assert not any("api_key" in key for key in keys)


def test_every_documented_key_is_accepted(tmp_path: Path) -> None:
    """documented_keys() and the loader agree: a file using every key loads."""
    config = load_config(filled_example(tmp_path))
    assert isinstance(config, Config)
    # every per-database key at once
    overrides = "\n".join(
        f"{key.split('.', 1)[1]} = {value}"
        for key, value in {
            "database.connect_timeout": "1",
            "database.command_timeout": "2",
            "database.rotate_within_days": "3",
            "database.strategy": "'create-first'",
            "database.freeze": "'none'",
            "database.backup_dir": "'b'",
            "database.keep_old": "true",
            "database.jobs": "5",
            "database.state_dir": "'s'",
            "database.deploy_timeout": "6",
            "database.provision_timeout": "7",
            "database.notify_url": "'http://localhost:8080/hook'",
        }.items()
    )
    settings = load_config(write(tmp_path, MINIMAL + overrides + "\n")).databases[0].settings
    assert settings == Settings(
        connect_timeout=1,
        command_timeout=2,
        rotate_within_days=3,
        strategy="create-first",
        freeze="none",
        backup_dir=tmp_path.resolve() / "b",
        keep_old=True,
        jobs=5,
        state_dir=tmp_path.resolve() / "s",
        deploy_timeout=6,
        provision_timeout=7,
        notify_url="http://localhost:8080/hook",
    )
    setting_keys = {f"database.{f.name}" for f in fields(Settings)}
    assert setting_keys <= set(documented_keys())


# --- placeholders left in a copy of the example -------------------------------------------


def test_the_example_copied_verbatim_is_refused_naming_the_placeholder() -> None:
    message = config_error(EXAMPLE)
    assert 'render.owner_id: "tea-..." is a placeholder' in message, message
    assert "delete the line" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[render]\nowner_id = "usr-..."\n' + MINIMAL, "render.owner_id"),
        ('[[database]]\nid = "dpg-..."\n', "database[0].id"),
        (MINIMAL + '[[database.target]]\nservice = "srv-..."\n', "database[0].target[0].service"),
        (
            MINIMAL + '[[database.target]]\nenv_group = "evg-\u2026"\n',
            "database[0].target[0].env_group",
        ),
    ],
)
def test_placeholders_are_refused_naming_the_key(tmp_path: Path, text: str, where: str) -> None:
    message = error_for(tmp_path, text)
    assert_names(message, where, "is a placeholder from the example config")
