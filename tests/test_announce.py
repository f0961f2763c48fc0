"""A rotation run from the library announces itself as the command line does: the chat
notification to `notify_url` (a real local HTTP receiver here) and GitHub Actions' summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from render_rotator import rotate
from render_rotator.config import load_config
from render_rotator.render import RenderClient
from render_rotator.rotation.announce import announce
from render_rotator.rotation.report import RotationReport, RotationResult
from render_rotator.sandbox.emulator import RenderEmulator
from tests.rotation_support import make_app, write_config

# no test here needs a database still creating or a deploy still running: ready at once
EMULATOR_DELAY = 0


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                length = int(self.headers.get("Content-Length") or 0)
                received.paths.append(self.path)
                received.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/T0K3N-abc123"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_a_library_rotation_notifies_its_notify_url(
    emu: RenderEmulator, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    app = make_app(emu, rows=50)
    config = write_config(tmp_path, app, freeze="none", notify_url=receiver.url)
    with RenderClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        result = rotate(config, client=client, yes=True)
    report = result.to_dict()
    assert result.exit_code == 0, report
    [body] = receiver.bodies
    assert receiver.paths == ["/hook/T0K3N-abc123"]
    assert body["text"] == body["content"]
    assert body["text"].startswith(
        f"render-rotator: ✅ {app.name} rotated to {report['new']['id']}"
    )
    assert app.password not in body["text"]


def test_a_quiet_day_posts_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """Only a rotation or a failure is worth a message; the receiver hears nothing else."""
    config = _config(tmp_path, receiver.url)
    announce(load_config(config), RotationResult([RotationReport(database="db", due=False)]))
    failed = RotationReport(database="db", ok=False, message="boom", exit_code=1)
    announce(load_config(config), RotationResult([failed]))
    assert [b["text"] for b in receiver.bodies] == ["render-rotator: ❌ db: rotation failed: boom"]


def test_an_unwritable_actions_summary_does_not_hide_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The rotation is over when it is announced: a summary path that cannot be written is
    a warning, not an exception that would lose the report."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a directory: open() fails
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    config = load_config(_config(tmp_path, None))
    announce(config, RotationResult([RotationReport(database="db", rotated=True)]))
    assert "GitHub step summary or outputs not written" in caplog.text


def test_load_config_registers_the_webhook_as_a_secret(tmp_path: Path) -> None:
    from render_rotator.secrets import scrub

    hook = "https://hooks.example.com/services/T000/B000/Xq7w9RtY2zPmA1"
    load_config(_config(tmp_path, hook))
    assert hook not in scrub(f"posting to {hook} failed")


def _config(directory: Path, notify_url: str | None) -> Path:
    path = directory / "render-rotator.toml"
    hook = f'notify_url = "{notify_url}"\n' if notify_url else ""
    path.write_text(
        f"[defaults]\n{hook}state_dir = 'state'\n\n[[database]]\nname = \"db\"\n"
        '  [[database.target]]\n  service = "srv-1"\n  key = "DATABASE_URL"\n'
    )
    return path
