"""The naming rules of rotated databases: what a new database is called, and which Render
databases belong to one [[database]] entry (the one it names, and its rotations).

After a rotation the database is called ``<base>-<YYYYMMDD>`` (or whatever the `new_name`
template renders to), so both `rotate` and `status` must recognise a database by name, by
base name, and by the `new_name` template, or they would lose track of it after the first
rotation.
"""

from __future__ import annotations

import re
import string
from datetime import date, datetime

_STAMP = r"\d{8}"
_DATE_SUFFIX = re.compile(rf"^(?P<base>.+)-(?P<stamp>{_STAMP})$")


def base_name(name: str) -> str:
    """`name` without trailing ``-YYYYMMDD`` suffixes left by earlier rotations.

    Only real calendar dates are stripped, so ``shop-12345678`` keeps its number.
    """
    while (match := _DATE_SUFFIX.match(name)) and _is_date(match["stamp"]):
        name = match["base"]
    return name


def _is_date(stamp: str) -> bool:
    try:
        datetime.strptime(stamp, "%Y%m%d")
    except ValueError:
        return False
    return True


def new_name(template: str | None, old_name: str, today: date) -> str:
    """The replacement's name: the `new_name` template rendered, or
    ``<old base name>-<YYYYMMDD>``.

    ``{name}`` is the old name without earlier date suffixes, so rotating every month
    yields ``app-db-20250101``, ``app-db-20250201``... rather than an ever longer name.
    """
    stamp = today.strftime("%Y%m%d")
    base = base_name(old_name)
    if template is None:
        return f"{base}-{stamp}"
    return template.format(date=stamp, name=base)


def _template_pattern(template: str) -> re.Pattern[str] | None:
    """`template` (``{name}``/``{date}`` placeholders) as a regex over full names; the
    ``name`` group holds what ``{name}`` stood for."""
    parts: list[str] = []
    named = False
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    for literal, field_name, _spec, _conversion in parsed:
        parts.append(re.escape(literal))
        if field_name == "date":
            parts.append(_STAMP)
        elif field_name == "name" and not named:
            parts.append("(?P<name>.+?)")
            named = True
        elif field_name == "name":
            parts.append("(?P=name)")
        elif field_name is not None:
            return None
    return re.compile("".join(parts) + r"\Z")


def is_rotation_of(configured: str, candidate: str, new_name: str | None = None) -> bool:
    """True when `candidate` is the database named `configured` or a rotation of it.

    ``myapp-db`` matches ``myapp-db``, ``myapp-db-20250101`` (date suffixes, however many) and,
    with ``new_name = "{name}-v{date}"``, ``myapp-db-v20250101`` (and rotations of that).
    """
    base = base_name(configured)
    pattern = _template_pattern(new_name) if new_name else None
    seen: set[str] = set()
    while candidate not in seen:
        seen.add(candidate)
        if candidate == configured or base_name(candidate) == base:
            return True
        if pattern is None or (match := pattern.match(candidate)) is None:
            return False
        if "name" not in pattern.groupindex:
            return True  # a fixed template such as "prod-db-{date}"
        candidate = match["name"]
    return False
