"""The README documents every command and every config key; the example config loads."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from render_rotator.cli import cli
from render_rotator.config import DEFAULTS, Settings, allowed_values, documented_keys, load_config
from render_rotator.errors import ConfigError
from tests.recorded import require_shared, shared_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "config.example.toml").read_text()


def test_every_command_has_help_and_a_readme_section():
    for name, command in cli.commands.items():
        assert command.help, f"command {name} has no help text"
        assert f"### `render-rotator {name}`" in README, f"README lacks a section for {name}"


def test_every_option_of_every_command_is_documented():
    for name, command in cli.commands.items():
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in ("--help",):
                    assert opt in README, f"README does not mention {name} {opt}"


def test_every_config_key_is_documented_in_readme_and_example():
    for key in documented_keys():
        leaf = key.rsplit(".", 1)[-1]
        assert f"`{leaf}`" in README or f"`{key}`" in README, f"README lacks config key {key}"
        assert f"{leaf} =" in EXAMPLE or f"# {leaf} =" in EXAMPLE, f"example lacks {key}"


def test_example_config_loads_once_its_placeholders_are_filled_in(tmp_path):
    example = (ROOT / "config.example.toml").read_text()
    with pytest.raises(ConfigError, match="render.owner_id"):
        load_config(ROOT / "config.example.toml")
    filled = tmp_path / "render-rotator.toml"
    filled.write_text(re.sub(r'"(tea|srv|evg|dpg)-\.\.\."', r'"\1-mine"', example))
    cfg = load_config(filled)
    assert cfg.databases and cfg.databases[0].targets


def _example_comment(key: str) -> str:
    """The comment of `key`'s line in the example's [defaults], with its continuation lines."""
    lines = EXAMPLE.split("\n[[database]]", 1)[0].splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"(# )?{key} =", line))
    comment = [lines[start].removeprefix("# ").partition("#")[2]]
    for line in lines[start + 1 :]:
        if not line.startswith(" ") or not line.strip().startswith("#"):
            break
        comment.append(line.strip().lstrip("#"))
    return " ".join(" ".join(comment).split())


def test_the_example_states_each_settings_allowed_values():
    """The ranges and choices the loader enforces are the ones the example promises."""
    allowed = allowed_values()
    assert allowed["jobs"] == "(integer 1 to 64)" and "lease_ttl" in allowed
    for key, text in allowed.items():
        assert text in _example_comment(key), f"the example's comment on {key} lacks {text}"


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if default is None:
        return "none"
    if isinstance(default, int | float):
        return f"{default:g}"
    return f"`{default}`"


def test_readme_gives_each_settings_default():
    for field in fields(Settings):
        row = f"| `{field.name}` | {_shown(getattr(DEFAULTS, field.name))} |"
        assert row in README, f"README's configuration table lacks {row}"


def test_the_product_contracts_config_block_loads(tmp_path):
    """The TOML in the product contract stays valid (placeholder ids filled in)."""
    product = require_shared(shared_dir() / "design" / "product.md")
    block = re.search(r"## Configuration.*?```toml\n(.*?)```", product.read_text(), re.S)
    assert block, "product.md has no configuration block"
    path = tmp_path / "render-rotator.toml"
    path.write_text(re.sub(r'"(tea|srv|evg|dpg)-\.\.\."', r'"\1-mine"', block[1]))
    config = load_config(path)
    assert config.render.owner_id == "tea-mine" and config.databases[0].targets
    assert config.defaults.jobs == 2 and config.databases[0].version == "18"
