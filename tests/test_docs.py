"""The README documents every command and every config key; the example config loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from render_rotator.cli import cli
from render_rotator.config import documented_keys, load_config
from render_rotator.errors import ConfigError

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
