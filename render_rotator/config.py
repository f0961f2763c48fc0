"""The TOML configuration: read once, validated completely, handed on as frozen dataclasses.

A rotation that stops half-way because of a typo in the config is far worse than one that never
starts, so everything is checked up front: unknown keys (with a "did you mean"), types (a bool
is not an int; an int is fine where a float is wanted), required keys, enum values, ranges,
duplicate databases, and API keys (which belong in RENDER_API_KEY only, never in a file that
may be committed). Every problem is a one-line `ConfigError` naming the file and the dotted key,
e.g. ``render-rotator.toml: database[0].target[1].connection: must be "internal" or "external",
got "public"``.

The file is found from the argument, else RENDER_ROTATOR_CONFIG, else ./render-rotator.toml.
Relative paths inside it (backup_dir, state_dir) are relative to the file's own directory, so
the result does not depend on where the command is run from.

The settings are one table: each field of `Settings` carries its default and the rule that
reads and bounds it; the keys the loader accepts, documented_keys() and the allowed values
the example config must state (tests/test_docs.py) all come from it.

Why not pydantic: a prototype with pydantic 2.14 models (strict, extra="forbid") passed
tests/test_config.py and tests/test_docs.py with the same messages and two tests changed (a
frozen model raises ValidationError, not AttributeError; `dataclasses.fields` became
`model_fields`), but took this module from 511 to 479 lines of code (blank lines, comments and
docstrings not counted; 664 to 595 lines in all). The messages are most of this module, and
pydantic's do not name things the way users read them ("must be from 1 to 64, got 0", "did you
mean", "it belongs in [defaults]"), so every field kept its hand-written check and a translator
from pydantic's error types and locations back to one line was added; the optional per-database
copy of every setting became a second list of the settings to keep in step. Too little gone for
four new runtime packages (pydantic, pydantic-core, annotated-types, typing-inspection). Not
prototyped: msgspec reports a failure as text only ("Expected `int`, got `bool` - at `$.jobs`"),
and cattrs leaves per-type messages to hand-written hooks, so neither removes the part that is
large.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal, NoReturn, cast, get_args
from urllib.parse import urlsplit

from render_rotator import secrets
from render_rotator.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "CONNECTIONS",
    "DEFAULT_CONFIG_NAME",
    "DEFAULTS",
    "FREEZE_MODES",
    "MAX_DAYS",
    "MAX_JOBS",
    "MAX_SECONDS",
    "STRATEGIES",
    "Config",
    "Connection",
    "DatabaseConfig",
    "Freeze",
    "RenderSettings",
    "Settings",
    "Strategy",
    "TargetConfig",
    "allowed_values",
    "config_path",
    "documented_keys",
    "load_config",
]

CONFIG_ENV_VAR = "RENDER_ROTATOR_CONFIG"
DEFAULT_CONFIG_NAME = "render-rotator.toml"
EXAMPLE_CONFIG_NAME = "config.example.toml"

Strategy = Literal["auto", "create-first", "delete-first"]
Freeze = Literal["suspend", "maintenance", "readonly", "none"]
Connection = Literal["internal", "external"]
Verify = Literal["content", "counts"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
FREEZE_MODES: tuple[str, ...] = get_args(Freeze)
CONNECTIONS: tuple[str, ...] = get_args(Connection)
VERIFY_MODES: tuple[str, ...] = get_args(Verify)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_SHOWN = 60  # characters of a bad value echoed back in a message

# Allowed ranges: anything outside is a typo that would otherwise surface mid-rotation (a
# jobs = 100000 opening connections until the server refuses, a timeout that never fires).
MAX_JOBS = 64
MAX_SECONDS = 7 * 86400  # a week: longer than any dump, deploy or provisioning should take
MAX_DAYS = 365


@dataclass(frozen=True)
class _Rule:
    """How one setting is read from the file, and what it allows in the words the example
    config's comments use (a test holds the two together, so the docs cannot drift)."""

    read: Callable[[_Reader, Any, str], Any]
    allowed: str | None = None


def _seconds(at_least: float = 0) -> _Rule:
    low = "> 0" if at_least == 0 else f"at least {at_least:g}"
    return _Rule(
        lambda r, v, w: r.number(v, w, at_least), f"({low}, at most {MAX_SECONDS}: a week)"
    )


def _integer(minimum: int, maximum: int) -> _Rule:
    return _Rule(
        lambda r, v, w: r.integer(v, w, minimum, maximum), f"(integer {minimum} to {maximum})"
    )


def _choice(options: tuple[str, ...]) -> _Rule:
    return _Rule(lambda r, v, w: r.choice(v, options, w), " | ".join(options))


_BOOLEAN = _Rule(lambda r, v, w: r.boolean(v, w))
_DIRECTORY = _Rule(lambda r, v, w: r.path(v, w))
_URL = _Rule(lambda r, v, w: r.url(v, w), "http(s) URL")


def _setting(default: Any, rule: _Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class Settings:
    """Knobs that [defaults] sets and each [[database]] may override: the one table of the
    settings, each with its default and the rule that reads and bounds it.

    backup_dir and state_dir are absolute after load_config (relative to the config file);
    in DEFAULTS they are the bare relative defaults.
    """

    connect_timeout: float = _setting(30.0, _seconds())
    command_timeout: float = _setting(600.0, _seconds())
    rotate_within_days: int = _setting(7, _integer(0, MAX_DAYS))
    strategy: Strategy = _setting("auto", _choice(STRATEGIES))
    freeze: Freeze = _setting("suspend", _choice(FREEZE_MODES))
    backup_dir: Path = _setting(Path("backups"), _DIRECTORY)
    keep_old: bool = _setting(False, _BOOLEAN)
    jobs: int = _setting(2, _integer(1, MAX_JOBS))
    # "content": rows compared by checksum; "counts": by count only (weaker, faster)
    verify: Verify = _setting("content", _choice(VERIFY_MODES))
    # where state is kept, how long to wait on Render, notifications, Blueprints, the lease
    state_dir: Path = _setting(Path(".render-rotator"), _DIRECTORY)
    deploy_timeout: float = _setting(900.0, _seconds())
    provision_timeout: float = _setting(900.0, _seconds())
    notify_url: str | None = _setting(None, _URL)
    # rotate although a Blueprint manages the database or a target
    allow_blueprint: bool = _setting(False, _BOOLEAN)
    # at least 10 s: the heartbeat renews the lease every third of it over the network
    lease_ttl: float = _setting(120.0, _seconds(at_least=10))


DEFAULTS = Settings()
SETTING_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
_RULES: dict[str, _Rule] = {f.name: f.metadata["rule"] for f in fields(Settings)}


@dataclass(frozen=True)
class RenderSettings:
    """The [render] table. The API key is deliberately absent: it comes from the environment."""

    owner_id: str | None = None


@dataclass(frozen=True)
class TargetConfig:
    """One env var (on a service or an env group) that must point at the database."""

    service: str | None = None
    env_group: str | None = None
    key: str = "DATABASE_URL"
    connection: Connection = "internal"

    @property
    def label(self) -> str:
        """A short human name, e.g. ``srv-abc:DATABASE_URL``."""
        return f"{self.service or self.env_group}:{self.key}"


@dataclass(frozen=True)
class DatabaseConfig:
    """One [[database]] table: which Render Postgres to rotate and who uses it."""

    name: str | None
    id: str | None
    new_name: str | None
    version: str | None
    targets: tuple[TargetConfig, ...]
    settings: Settings

    @property
    def label(self) -> str:
        """The name if given, else the id: what messages and reports call this database."""
        return cast(str, self.name or self.id)


@dataclass(frozen=True)
class Config:
    """A validated config file."""

    path: Path
    render: RenderSettings
    defaults: Settings
    databases: tuple[DatabaseConfig, ...]

    def find_database(self, name_or_id: str) -> DatabaseConfig:
        """The [[database]] configured with this name or id (e.g. from ``--database``)."""
        for db in self.databases:
            if name_or_id in (db.name, db.id):
                return db
        configured = ", ".join(_quote(db.label) for db in self.databases) or "none"
        raise ConfigError(
            f"{self.path}: no [[database]] with name or id {_quote(name_or_id)}; "
            f"configured: {configured}"
        )


def documented_keys() -> tuple[str, ...]:
    """Every valid key path (leaves only), in the order the example file documents them.

    Per-database overrides appear as ``database.<setting>``; targets as ``database.target.*``.
    """
    return (
        "render.owner_id",
        *(f"defaults.{key}" for key in SETTING_KEYS),
        *(f"database.{key}" for key in _DATABASE_KEYS),
        *(f"database.{key}" for key in SETTING_KEYS),
        *(f"database.target.{key}" for key in _TARGET_KEYS),
    )


def allowed_values() -> dict[str, str]:
    """Each setting's allowed values as the example config's comments state them."""
    return {key: rule.allowed for key, rule in _RULES.items() if rule.allowed is not None}


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Which file load_config would read: the argument, RENDER_ROTATOR_CONFIG, or the default."""
    if path is not None and str(path) != "":
        return Path(path).expanduser()
    from_env = os.environ.get(CONFIG_ENV_VAR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file; any problem is a one-line ConfigError."""
    chosen = config_path(path)
    shown = str(chosen)
    try:
        raw = chosen.read_bytes()
    except FileNotFoundError:
        raise ConfigError(_missing_file_message(chosen, path)) from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {_one_line(str(exc))}") from None
    absolute = chosen.resolve()
    cfg = _Reader(shown, absolute.parent).config(document, absolute)
    # a webhook URL is a credential: known as one before anything could print it
    secrets.register(cfg.defaults.notify_url)
    for db in cfg.databases:
        secrets.register(db.settings.notify_url)
    return cfg


def _missing_file_message(chosen: Path, given: str | os.PathLike[str] | None) -> str:
    if given is not None and str(given) != "":
        source = "given with -c"
    elif os.environ.get(CONFIG_ENV_VAR, "").strip():
        source = f"from {CONFIG_ENV_VAR}"
    else:
        source = f"the default, in {Path.cwd()}"
    return (
        f"{chosen}: config file not found ({source}); create it by copying "
        f"{EXAMPLE_CONFIG_NAME} (cp {EXAMPLE_CONFIG_NAME} {DEFAULT_CONFIG_NAME}) and editing it, "
        f"or point to another file with -c FILE or {CONFIG_ENV_VAR}"
    )


# --- validation ------------------------------------------------------------------------------

_TOP_KEYS = ("render", "defaults", "database")
_RENDER_KEYS = tuple(f.name for f in fields(RenderSettings))
_DATABASE_KEYS = tuple(
    f.name for f in fields(DatabaseConfig) if f.name not in ("targets", "settings")
)
_TARGET_KEYS = tuple(f.name for f in fields(TargetConfig))
_NEW_NAME_FIELDS = frozenset({"date", "name"})


def _join(where: str, key: str) -> str:
    """A dotted key path; keys that are not bare TOML keys are quoted."""
    shown = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{where}.{shown}" if where else shown


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quote(value: str) -> str:
    """A string as TOML/JSON would write it, shortened, never spanning lines."""
    if len(value) > _MAX_SHOWN:
        value = value[: _MAX_SHOWN - 3] + "..."
    return json.dumps(value, ensure_ascii=False)


def _describe(value: Any) -> str:
    """A bad value for a message, with its TOML type when that is the problem."""
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | dtime):
        return f"{type(value).__name__} {value.isoformat()}"
    return type(value).__name__


def _choices(options: tuple[str, ...]) -> str:
    quoted = [json.dumps(option) for option in options]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _mentions_api_key(key: str) -> bool:
    return "apikey" in key.lower().replace("_", "").replace("-", "")


def _placement_hint(key: str, where: str) -> str | None:
    """For a key valid elsewhere in the file: where it belongs."""
    if key in SETTING_KEYS and (where in ("", "render") or ".target" in where):
        return "it belongs in [defaults] or a [[database]] table"
    if key in _DATABASE_KEYS and not where.startswith("database"):
        return "it belongs in a [[database]] table"
    if key in _TARGET_KEYS and key != "key" and ".target" not in where:
        return "it belongs in a [[database.target]] table"
    return None


class _Reader:
    """Turns the parsed TOML document into a Config, failing on the first problem."""

    def __init__(self, shown: str, base_dir: Path) -> None:
        self.shown = shown
        self.base_dir = base_dir

    def fail(self, where: str, problem: str) -> NoReturn:
        prefix = f"{self.shown}: {where}: " if where else f"{self.shown}: "
        raise ConfigError(_one_line(prefix + problem))

    # structure

    def config(self, document: dict[str, Any], path: Path) -> Config:
        self.reject_api_keys(document, "")
        self.check_keys(document, _TOP_KEYS, "")
        render = self.render(self.table(document, "render", ""))
        defaults_table = self.table(document, "defaults", "")
        self.check_keys(defaults_table, SETTING_KEYS, "defaults")
        defaults = self.settings(
            defaults_table,
            replace(
                DEFAULTS,
                backup_dir=self.base_dir / DEFAULTS.backup_dir,
                state_dir=self.base_dir / DEFAULTS.state_dir,
            ),
            "defaults",
        )
        if "database" not in document:
            self.fail(
                "database",
                "missing required key: add at least one [[database]] table "
                f"(see {EXAMPLE_CONFIG_NAME})",
            )
        tables = self.array_of_tables(document["database"], "database", "[[database]]")
        if not tables:
            self.fail("database", "at least one [[database]] table is required")
        databases = tuple(
            self.database(table, defaults, f"database[{i}]") for i, table in enumerate(tables)
        )
        self.check_unique(databases)
        return Config(path=path, render=render, defaults=defaults, databases=databases)

    def reject_api_keys(self, node: Any, where: str) -> None:
        """API keys would leak through a committed file: refuse them wherever they appear."""
        if isinstance(node, dict):
            for key, value in node.items():
                path = _join(where, key)
                if _mentions_api_key(key):
                    self.fail(
                        path,
                        "API keys must not be in the config file; the key is read only from "
                        "the RENDER_API_KEY environment variable, so remove this line and "
                        "export RENDER_API_KEY instead",
                    )
                self.reject_api_keys(value, path)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                self.reject_api_keys(item, f"{where}[{i}]")

    def check_keys(self, table: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
        for key in table:
            if key in valid:
                continue
            hint = _placement_hint(key, where)
            if hint is None:
                close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
                hint = (
                    f"did you mean {json.dumps(close[0])}?"
                    if close
                    else f"valid keys here: {', '.join(valid)}"
                )
            self.fail(_join(where, key), f"unknown key; {hint}")

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
        """An optional sub-table; absent means empty."""
        value = parent.get(key, {})
        path = _join(where, key)
        if not isinstance(value, dict):
            self.fail(path, f"must be a table ([{path}]), got {_describe(value)}")
        return value

    def array_of_tables(self, value: Any, where: str, header: str) -> list[dict[str, Any]]:
        if isinstance(value, dict):
            self.fail(where, f"must be an array of tables: write {header}, not {header[1:-1]}")
        if not isinstance(value, list):
            self.fail(where, f"must be an array of tables ({header}), got {_describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{where}[{i}]", f"must be a table ({header}), got {_describe(item)}")
        return value

    def render(self, table: dict[str, Any]) -> RenderSettings:
        self.check_keys(table, _RENDER_KEYS, "render")
        owner_id = None
        if "owner_id" in table:
            owner_id = self.text(table["owner_id"], "render.owner_id")
            self.not_placeholder(
                owner_id,
                "render.owner_id",
                "your workspace id (tea-... or usr-...), or delete the line to use the old "
                "database's owner",
            )
        return RenderSettings(owner_id=owner_id)

    def settings(self, table: dict[str, Any], base: Settings, where: str) -> Settings:
        """`base` with every setting present in `table` validated and applied."""
        changes = {
            key: rule.read(self, table[key], _join(where, key))
            for key, rule in _RULES.items()
            if key in table
        }
        return replace(base, **changes)

    def database(self, table: dict[str, Any], defaults: Settings, where: str) -> DatabaseConfig:
        self.check_keys(table, (*_DATABASE_KEYS, *SETTING_KEYS, "target"), where)
        name = self.text(table["name"], f"{where}.name") if "name" in table else None
        db_id = self.text(table["id"], f"{where}.id") if "id" in table else None
        if name is None and db_id is None:
            self.fail(where, 'missing required key "name" (or "id" = "dpg-...")')
        if name is not None and db_id is not None:
            self.fail(where, 'give either "name" or "id", not both')
        if db_id is not None:
            self.prefixed(db_id, "dpg-", f"{where}.id", "a Render Postgres id")
        if name is not None and name.startswith("dpg-"):
            self.fail(
                f"{where}.name",
                f"{_quote(name)} looks like a Render Postgres id: write id = {_quote(name)}",
            )
        new_name = None
        if "new_name" in table:
            new_name = self.new_name(table["new_name"], f"{where}.new_name")
        version = self.version(table["version"], f"{where}.version") if "version" in table else None
        targets: tuple[TargetConfig, ...] = ()
        if "target" in table:
            tables = self.array_of_tables(table["target"], f"{where}.target", "[[database.target]]")
            targets = tuple(
                self.target(item, f"{where}.target[{i}]") for i, item in enumerate(tables)
            )
            self.check_unique_targets(targets, where)
        return DatabaseConfig(
            name=name,
            id=db_id,
            new_name=new_name,
            version=version,
            targets=targets,
            settings=self.settings(table, defaults, where),
        )

    def target(self, table: dict[str, Any], where: str) -> TargetConfig:
        self.check_keys(table, _TARGET_KEYS, where)
        service = self.text(table["service"], f"{where}.service") if "service" in table else None
        group = (
            self.text(table["env_group"], f"{where}.env_group") if "env_group" in table else None
        )
        if service is None and group is None:
            self.fail(where, 'missing required key "service" (or "env_group")')
        if service is not None and group is not None:
            self.fail(where, 'give either "service" or "env_group", not both')
        if service is not None:
            self.prefixed(service, "srv-", f"{where}.service", "a Render service id")
        if group is not None:
            self.prefixed(group, "evg-", f"{where}.env_group", "a Render env group id")
        key = "DATABASE_URL"
        if "key" in table:
            key = self.text(table["key"], f"{where}.key")
            if any(ch.isspace() or ch == "=" for ch in key):
                self.fail(
                    f"{where}.key",
                    f"must be an env var name without spaces or '=', got {_quote(key)}",
                )
        connection = "internal"
        if "connection" in table:
            connection = self.choice(table["connection"], CONNECTIONS, f"{where}.connection")
        return TargetConfig(
            service=service,
            env_group=group,
            key=key,
            connection=cast(Connection, connection),
        )

    def check_unique(self, databases: tuple[DatabaseConfig, ...]) -> None:
        seen: dict[tuple[str, str], int] = {}
        for i, db in enumerate(databases):
            key, value = ("name", db.name) if db.name is not None else ("id", db.id)
            assert value is not None
            if (key, value) in seen:
                self.fail(
                    f"database[{i}].{key}",
                    f"duplicate database {key} {_quote(value)} "
                    f"(also in database[{seen[key, value]}])",
                )
            seen[key, value] = i

    def check_unique_targets(self, targets: tuple[TargetConfig, ...], where: str) -> None:
        seen: dict[tuple[str | None, str | None, str], int] = {}
        for i, target in enumerate(targets):
            ident = (target.service, target.env_group, target.key)
            if ident in seen:
                self.fail(
                    f"{where}.target[{i}]",
                    f"duplicate target {target.label} (also {where}.target[{seen[ident]}])",
                )
            seen[ident] = i

    # scalar values

    def text(self, value: Any, where: str) -> str:
        """A non-empty string without surrounding whitespace (ids and names are exact)."""
        if not isinstance(value, str):
            self.fail(where, f"must be a string, got {_describe(value)}")
        if not value.strip():
            self.fail(where, "must not be empty")
        if value != value.strip():
            self.fail(where, f"has leading or trailing whitespace: {_quote(value)}")
        return value

    def not_placeholder(self, value: str, where: str, instead: str) -> None:
        """Refuse an example's placeholder ("tea-...") left in a copied config."""
        if "..." in value or "\u2026" in value:
            self.fail(
                where, f"{_quote(value)} is a placeholder from the example config: put {instead}"
            )

    def prefixed(self, value: str, prefix: str, where: str, what: str) -> None:
        self.not_placeholder(value, where, f"{what} ({prefix}... from the Render dashboard)")
        if not value.startswith(prefix) or len(value) == len(prefix):
            self.fail(where, f'must be {what} ("{prefix}..."), got {_quote(value)}')

    def choice(self, value: Any, options: tuple[str, ...], where: str) -> str:
        if not isinstance(value, str) or value not in options:
            self.fail(where, f"must be {_choices(options)}, got {_describe(value)}")
        return value

    def number(self, value: Any, where: str, at_least: float = 0) -> float:
        """Seconds: ints and floats both fine, but finite, > 0 (or at least `at_least`) and
        at most MAX_SECONDS."""
        allowed = f"between 0 and {MAX_SECONDS} seconds (a week)"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"must be a number of seconds, got {_describe(value)}")
        if not math.isfinite(value):
            self.fail(where, f"must be a finite number {allowed}, got {_describe(value)}")
        if value <= 0 or value > MAX_SECONDS:
            self.fail(where, f"must be {allowed}, got {value:g}")
        if value < at_least:
            self.fail(where, f"must be at least {at_least:g} seconds, got {value}")
        return float(value)

    def integer(self, value: Any, where: str, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"must be an integer, got {_describe(value)}")
        if not minimum <= value <= maximum:
            self.fail(where, f"must be from {minimum} to {maximum}, got {value}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"must be true or false, got {_describe(value)}")
        return value

    def path(self, value: Any, where: str) -> Path:
        """A directory; relative ones are taken from the config file's directory."""
        return self.base_dir / Path(self.text(value, where)).expanduser()

    def url(self, value: Any, where: str) -> str | None:
        """An http(s) URL; "" switches notifications off. Never echoed: it may hold a token."""
        if not isinstance(value, str):
            self.fail(where, f"must be a string, got {_describe(value)}")
        if value == "":
            return None
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            valid = False
        if not valid:
            self.fail(
                where, "must be an http:// or https:// URL (value not shown: it may hold a token)"
            )
        return value

    def new_name(self, value: Any, where: str) -> str:
        """A name template using only {date} and {name}, checked now rather than mid-rotation."""
        template = self.text(value, where)
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            self.fail(
                where, f"bad template {_quote(template)}: {exc} (write {{{{ for a literal {{)"
            )
        for _literal, field_name, spec, conversion in parsed:
            if field_name is None:
                continue
            if field_name not in _NEW_NAME_FIELDS or spec or conversion:
                self.fail(
                    where,
                    f"unknown placeholder {{{field_name}}} in {_quote(template)}; "
                    "only {date} (YYYYMMDD) and {name} (the old name without its date "
                    "suffix) exist",
                )
        return template

    def version(self, value: Any, where: str) -> str:
        """A PostgreSQL major version as Render names them ("18"); an integer 18 is accepted."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
            self.fail(
                where, f'must be a PostgreSQL major version such as "18", got {_describe(value)}'
            )
        if int(value) < 11:
            self.fail(where, f"Render offers PostgreSQL 11 and newer, got {_quote(value)}")
        return value
