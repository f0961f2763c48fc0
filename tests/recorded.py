"""Load Render's real recorded traffic (go-vcr v2 cassettes) as plain dicts.

Shared by the client's replay tests and by tests that compare the Render emulator with what
Render really answers. The cassettes live in ``shared/render-api/recorded/`` beside the
checkout (``RENDER_ROTATOR_SHARED`` overrides where ``shared`` is).

Each interaction becomes a dict:

    cassette      file name, e.g. "postgres.yaml"
    index         the interaction's id within its cassette
    method        "GET", "POST", ...
    path          URL path without the API version prefix, e.g. "/postgres/dpg-...-a"
    query         {name: value} from the URL's query string (last value wins)
    request_body  decoded JSON, or the raw string when not JSON, or None when empty
    status        the HTTP status code Render answered (int)
    headers       {name: value}, several values of one header joined with ", "
    body          decoded JSON, or the raw string when not JSON, or None when empty
    body_text     the response body exactly as recorded
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

API_PREFIX = "/v1"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster when present


def shared_dir() -> Path:
    """Where the project's shared material lives (may not exist outside the dev tree)."""
    env = os.environ.get("RENDER_ROTATOR_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared"


def recorded_dir() -> Path:
    return shared_dir() / "render-api" / "recorded"


REQUIRE_SHARED_ENV = "RENDER_ROTATOR_REQUIRE_SHARED"


def missing_shared_message(path: Path) -> str:
    """Why a test cannot run without ``shared/``, and how to get it."""
    return (
        f"{path} not found: these tests need the project's `shared` folder (Render's OpenAPI "
        "spec, recorded Render traffic, the seed document). Put it beside the clone "
        f"({Path(__file__).resolve().parents[2] / 'shared'}) or set RENDER_ROTATOR_SHARED "
        "to where it is"
    )


def require_shared(path: Path, *, module: bool = False) -> Path:
    """`path` (inside ``shared/``) when it exists; otherwise skip the test (or module), or
    fail it where shared/ is part of the contract (CI sets RENDER_ROTATOR_REQUIRE_SHARED=1)."""
    if path.exists():
        return path
    message = missing_shared_message(path)
    if os.environ.get(REQUIRE_SHARED_ENV):
        pytest.fail(f"{message} ({REQUIRE_SHARED_ENV} is set)", pytrace=False)
    pytest.skip(message, allow_module_level=module)
    raise AssertionError("unreachable")  # pragma: no cover


def _decode(text: str | None) -> Any:
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _headers(raw: dict[str, list[str]] | None) -> dict[str, str]:
    return {name: ", ".join(str(v) for v in values) for name, values in (raw or {}).items()}


def load_interactions(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every interaction of every cassette in ``directory`` (default: the shared recordings),
    in file then recording order. Raises FileNotFoundError when the directory is missing."""
    folder = directory or recorded_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"no recorded Render traffic at {folder}")
    interactions: list[dict[str, Any]] = []
    for cassette in sorted(folder.glob("*.yaml")):
        data = yaml.load(cassette.read_text(encoding="utf-8"), Loader=_Loader) or {}
        for item in data.get("interactions") or []:
            request, response = item["request"], item["response"]
            url = urlsplit(request["url"])
            path = url.path
            if path.startswith(API_PREFIX + "/"):
                path = path[len(API_PREFIX) :]
            interactions.append(
                {
                    "cassette": cassette.name,
                    "index": item.get("id", len(interactions)),
                    "method": str(request["method"]).upper(),
                    "path": path,
                    "query": dict(parse_qsl(url.query, keep_blank_values=True)),
                    "request_body": _decode(request.get("body")),
                    "status": int(response["code"]),
                    "headers": _headers(response.get("headers")),
                    "body": _decode(response.get("body")),
                    "body_text": response.get("body") or "",
                }
            )
    return interactions
