"""Redaction by value (render_rotator/secrets.py): a registered secret is blanked wherever it
appears, encoded or not, and a word-like one only where it stands as a value."""

from __future__ import annotations

import uuid

from render_rotator import secrets


def test_a_word_like_password_is_redacted_as_a_value_not_inside_prose() -> None:
    secrets.register("pass")
    text = "password authentication failed; pass --yes or pass it again"
    assert secrets.scrub(text) == text  # the word stays a word
    assert secrets.scrub("postgresql://u:pass@h/db") == "postgresql://u:***@h/db"
    assert secrets.scrub("password=pass host=h") == "password=*** host=h"
    assert secrets.scrub("got 'pass' back") == "got '***' back"
    assert secrets.scrub("pass") == "***"


def test_a_random_secret_is_redacted_wherever_it_appears() -> None:
    token = "rnd_" + uuid.uuid4().hex
    secrets.register(token)
    assert token not in secrets.scrub(f"key{token}x and Bearer {token}")
    encoded = "a/b@c" + uuid.uuid4().hex[:6]
    secrets.register(encoded)
    assert secrets.scrub(f"url=x%2F{encoded.replace('/', '%2F').replace('@', '%40')}") == (
        "url=x%2F***"
    )
