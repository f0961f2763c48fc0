"""Secrets (passwords, API keys, connection strings) and their removal from any text.

One place decides what is secret and how it is blanked, for log lines, printed URLs, error
messages and JSON alike:

- every URL's password (``scheme://user:PASSWORD@host``, even with an unencoded ``@`` or
  ``:`` in it) and every ``password=`` parameter becomes ``***``;
- every value registered with `register` is blanked where it occurs. A secret that looks like
  a random string is blanked wherever it appears; one made of letters only (``pass``,
  ``postgres``) only where it stands as a value (after ``=`` or ``:``, quoted, or the whole
  text), so the word "password" or a sentence using the same word stays readable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import quote

MASK = "***"
_MIN_LEN = 3  # shorter values cannot be told from ordinary text at all

_registered: set[str] = set()
_lock = threading.RLock()
_listeners: list[Callable[[str], None]] = []

# scheme://user:PASSWORD@host — the password runs to the last "@" of the token, so an
# unencoded "@" or ":" inside it is covered too; also scheme:/user:PASSWORD@host, which is
# what a URL becomes when used as a file path (pathlib folds "//")
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*:/{1,2}[^:/@\s'\"]*:)([^\s'\"]*)(@)")
# password=VALUE in a query string or a libpq keyword/value string
_PARAM_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\"[^\"]*\"|[^&\s'\"]+)", re.IGNORECASE)
# for refusing to store text, not for blanking it: any URL with userinfo whose password is
# not the mask, whatever characters it holds (a quote, say, which redact_urls stops at)
_UNMASKED_URL_PASSWORD = re.compile(
    r"[a-z][a-z0-9+.-]*:/{1,2}[^\s/@]*:(?!\*\*\*@)[^\s@]+@", re.IGNORECASE
)
# where a letters-only secret counts as a value: after = or :, or quoted, up to a delimiter
_VALUE_BEFORE = "=:'\"/"
_VALUE_AFTER = "'\"@&,;)/"


def register(value: str | None) -> None:
    """Never print `value` again.

    Listeners (e.g. GitHub Actions' `::add-mask::`) hear each new secret before this returns,
    so nothing the caller prints next can show it unmasked.
    """
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _registered:
            return
        _registered.add(value)
        for listener in list(_listeners):
            listener(value)


def on_register(listener: Callable[[str], None]) -> None:
    """Call `listener(value)` for every secret registered from now on, and for those known.

    Idempotent per listener, so a CLI that sets up twice does not mask twice.
    """
    with _lock:
        if listener in _listeners:
            return
        _listeners.append(listener)
        for value in _registered:
            listener(value)


def known() -> list[str]:
    """Registered secrets, longest first (so a longer one is blanked before its parts)."""
    with _lock:
        return sorted(_registered, key=len, reverse=True)


def is_wordlike(secret: str) -> bool:
    """A letters-only secret could be an ordinary word: blank it only as a value."""
    return secret.isalpha() and len(secret) < 16


def redact_urls(text: str) -> str:
    """Blank the password of every URL (any scheme) and every password= parameter."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
    return _PARAM_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def _blank_value(text: str, secret: str) -> str:
    """Blank `secret` only where it stands as a value (see the module docstring)."""
    if text == secret:
        return MASK
    before = "" if not _VALUE_BEFORE else re.escape(_VALUE_BEFORE)
    pattern = re.compile(
        rf"(?:(?<=[{before}])|^){re.escape(secret)}(?=[{re.escape(_VALUE_AFTER)}\s]|$)"
    )
    return pattern.sub(MASK, text)


def _blank(text: str, secret: str) -> str:
    forms = [secret]
    encoded = quote(secret, safe="")
    if encoded != secret:
        forms.append(encoded)
    for form in forms:
        if form not in text:
            continue
        text = _blank_value(text, form) if is_wordlike(form) else text.replace(form, MASK)
    return text


def scrub(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords, registered secrets and `extra` secrets blanked."""
    text = redact_urls(text)
    secrets = {s for s in extra if s and len(s) >= _MIN_LEN} | set(known())
    for secret in sorted(secrets, key=len, reverse=True):
        text = _blank(text, secret)
    return text


def holds_secret(text: str) -> bool:
    """Whether `text` holds anything secret: what `scrub` would blank, or a URL whose
    password is not masked. For refusing to store text at all (the journal), where erring
    towards refusal is right."""
    return bool(_UNMASKED_URL_PASSWORD.search(text)) or scrub(text) != text
