"""The rotation shows its copy through the `RotationUI` protocol alone: the copy phase asks the
display to watch the new database, and render_rotator.ui's watcher feeds the progress."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from render_rotator import rotate
from render_rotator.postgres.progress import CopyWatcher
from render_rotator.postgres.url import require_tls
from render_rotator.render import RenderClient
from render_rotator.rotation.observer import CopyMeter
from render_rotator.sandbox.emulator import RenderEmulator
from render_rotator.ui import UI, CopyProgressDisplay
from tests.rotation_support import make_app, write_config


class WatchingUI(UI):
    """The quiet UI, keeping what the rotation asked it to show."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.progress: list[CopyProgressDisplay] = []
        self.watched: list[tuple[str, dict[str, int] | None]] = []

    def copy_progress(
        self, total_bytes: int | None = None, total_rows: int | None = None
    ) -> CopyProgressDisplay:
        progress = super().copy_progress(total_bytes, total_rows)
        self.progress.append(progress)
        return progress

    def watch_copy(
        self,
        url: str,
        progress: CopyMeter,
        *,
        expected_rows: Mapping[str, int] | None = None,
        track_rows: bool = True,
        connect_timeout: float = 10.0,
    ) -> CopyWatcher:
        self.watched.append((url, dict(expected_rows) if expected_rows else None))
        return super().watch_copy(
            url,
            progress,
            expected_rows=expected_rows,
            track_rows=track_rows,
            connect_timeout=connect_timeout,
        )


def test_the_copy_phase_is_watched_through_the_ui(emu: RenderEmulator, tmp_path: Path) -> None:
    app = make_app(emu, rows=40)
    config = write_config(tmp_path, app, freeze="none")
    ui = WatchingUI()
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        result = rotate(config, client=client, yes=True, ui=ui)
    report = result.to_dict()
    assert result.exit_code == 0, report
    [(url, expected)] = ui.watched
    new = emu.connection_info(report["new"]["id"])
    assert url == require_tls(new["externalConnectionString"])  # the new database, over TLS
    assert expected is not None and sum(expected.values()) == report["rows_copied"]
    [progress] = ui.progress
    # the watcher marked every table of the backup done, with its rows, and the size measured
    assert progress.rows_done == report["rows_copied"]
    assert "tables done" in progress.summary(final=True)
    assert progress.bytes_done == report["bytes_copied"] > 0
