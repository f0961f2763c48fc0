"""No module imports a layer above its own: read from every module's imports (ast).

From the bottom: the foundation (errors, secrets, config, logging), then the leaf packages
(postgres/ and render/, which know nothing of each other), then the reporting sinks (GitHub
Actions, chat notifications), the rotation, the presentations (terminal UI, sandbox), and at
the top the entry points. A module may import its own unit and anything below; never a unit
beside it in its layer or above it. The rotation sees the UI only through the `RotationUI`
protocol in rotation/observer.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "render_rotator"

# bottom first; each unit is a top-level module or subpackage of render_rotator
LAYERS: list[tuple[str, set[str]]] = [
    ("secrets", {"secrets"}),
    ("foundation", {"errors", "stopping"}),
    ("settings and logging", {"config", "logs", "faults"}),
    ("leaf packages", {"postgres", "render"}),
    ("reporting sinks", {"github", "notify"}),
    ("rotation", {"rotation"}),
    ("presentation", {"ui", "sandbox"}),
    ("command line", {"cli"}),
    ("entry points", {"__main__", "__init__"}),
]
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """`render_rotator.postgres.url` -> `postgres`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import of render_rotator in `source`, at any depth
    (a lazy import inside a function counts the same), with `from render_rotator import x`
    read as importing `render_rotator.x` and relative imports resolved."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base in ("render_rotator", "render_rotator.rotation", "render_rotator.postgres"):
                found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name.split(".")[0] == "render_rotator"]


def _upward(module: str, source: str, is_package: bool = False) -> list[str]:
    own = _unit(module)
    problems = []
    for line, name in _imports(source, module, is_package):
        unit = _unit(name)
        if unit == own or unit not in RANK:  # e.g. __version__ from the package: not a module
            continue
        if RANK[unit] >= RANK[own]:
            where = "beside" if RANK[unit] == RANK[own] else "above"
            problems.append(
                f"{module}:{line} imports {name} "
                f"({LAYERS[RANK[unit]][0]}, {where} {LAYERS[RANK[own]][0]})"
            )
    return problems


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in MODULES}
    assert units - set(RANK) == set(), "place each new module or package in LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert _upward(_module_name(path), source, path.name == "__init__.py") == []


def _imported(problems: list[str]) -> list[str]:
    return [p.split(" imports ")[1].split(" ")[0] for p in problems]


def test_the_check_sees_lazy_relative_and_package_imports() -> None:
    """The check itself can fail: each form of an upward import is caught."""
    source = (
        "def late():\n"
        "    from render_rotator.ui import CopyWatcher\n"
        "    from .. import cli\n"
        "    import render_rotator.sandbox.demo\n"
        "    from render_rotator import ui\n"
        "    from render_rotator.rotation import context  # its own unit: fine\n"
        "    from . import journal  # its own unit: fine\n"
        "    from render_rotator.postgres import url  # below: fine\n"
    )
    assert _imported(_upward("render_rotator.rotation.probe", source)) == [
        "render_rotator.ui",
        "render_rotator.cli",
        "render_rotator.sandbox.demo",
        "render_rotator.ui",
    ]


def test_postgres_and_render_know_nothing_of_each_other() -> None:
    """The two leaf packages share a layer, so an import between them is refused."""
    source = "from render_rotator.render import Postgres\nfrom ..render.client import x\n"
    assert _imported(_upward("render_rotator.postgres.probe", source)) == [
        "render_rotator.render",
        "render_rotator.render.client",
    ]
    assert _imported(_upward("render_rotator.render.probe", "import render_rotator.postgres")) == [
        "render_rotator.postgres"
    ]
