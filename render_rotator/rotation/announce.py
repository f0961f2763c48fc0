"""After a rotate or resume: the GitHub Actions summary and outputs, and each database's
chat notification (`notify_url`).

Done by the library, not the command line, so a script calling `rotate()` is announced
exactly like `render-rotator rotate`. Neither can fail the rotation.
"""

from __future__ import annotations

import logging

from render_rotator import github
from render_rotator.config import Config
from render_rotator.errors import RenderRotatorError
from render_rotator.notify import notify
from render_rotator.rotation.report import RotationResult

log = logging.getLogger("render_rotator.rotation")


def notify_url_for(cfg: Config, database: str) -> str | None:
    """The database's own `notify_url`, else the defaults' (a report may name a database
    the config no longer lists)."""
    try:
        return cfg.find_database(database).settings.notify_url
    except RenderRotatorError:
        return cfg.defaults.notify_url


def announce(cfg: Config, result: RotationResult) -> None:
    """Publish the result to GitHub Actions (a no-op elsewhere) and notify per database."""
    try:
        github.publish(result.to_dict())
    except OSError as exc:  # the rotation is done; an unwritable summary must not hide it
        log.warning("GitHub step summary or outputs not written: %s", exc)
    for report in result.reports:
        notify(notify_url_for(cfg, report.database), report.to_dict())
