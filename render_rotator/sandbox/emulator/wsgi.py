"""The emulator as a WSGI application, and the standard library's threaded server for it.

`make_app` adapts WSGI to `RenderEmulator.handle`; ``httpx.WSGITransport(app=emu.app)`` drives
it in-process. `serve` runs it on a real socket (wsgiref, a thread per request) for
``render-rotator sandbox`` and for tests that need a real address (the CLI, other processes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

if TYPE_CHECKING:
    from render_rotator.sandbox.emulator.core import RenderEmulator

log = logging.getLogger("render_rotator.sandbox.emulator")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class DropConnection(ConnectionAbortedError):
    """The answer is no answer: the server closes the connection (wsgiref ends a request
    quietly on a ConnectionAbortedError, before anything was sent)."""


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _body(environ: dict[str, Any]) -> bytes | None:
    """The request body; None when its length is unknown (chunked over a socket: 411)."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.strip():
        size = int(length)
        return stream.read(size) if size > 0 else b""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        # wsgiref hands over the raw socket: only a server that decodes chunks says so
        return stream.read() if environ.get("wsgi.input_terminated") else None
    return b""


def make_app(emu: RenderEmulator) -> WSGIApp:
    """The WSGI application answering for `emu`."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        # WSGI gives the path %-decoded, as latin-1 code points of its bytes
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        body = _body(environ)
        if body is None:
            reply = emu.refuse(method, path, 411, "a request body needs a Content-Length")
        else:
            client = environ.get("REMOTE_ADDR", "")
            reply = emu.handle(method, path, environ.get("QUERY_STRING", ""), headers, body, client)
        if reply.drop:
            raise DropConnection("dropped by an injected fault")
        payload = reply.payload()
        out = [("Server", "render-emulator"), *reply.headers]
        if payload:
            out.append(("Content-Type", "application/json; charset=utf-8"))
        if reply.status != 204:
            out.append(("Content-Length", str(len(payload))))
        start_response(_status_line(reply.status), out)
        return [payload] if payload and method != "HEAD" else []

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    server_version = "render-emulator"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("emulator: " + format, *args)


def serve(app: WSGIApp, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve `app` on (`host`, `port`; 0 picks a free one) in a daemon thread."""
    server = _Server((host, port), _Handler)
    server.set_app(app)
    thread = threading.Thread(
        target=server.serve_forever, name="render-emulator", kwargs={"poll_interval": 0.1}
    )
    thread.daemon = True
    thread.start()
    return server, thread
