"""Secrets never shown: what logs, traces, readiness, errors and config
errors print is passed through :func:`redact` first.

Three kinds of secret are found and replaced by ``***``:

- the password in a URL (``http://svc:hunter2@host`` becomes
  ``http://svc:***@host``) and credential-like query arguments
  (``?api_key=...``, ``token``, ``key``, ``secret``, ``password``);
- bearer tokens (``Bearer sk-...``) and strings shaped like provider keys
  (``sk-...``);
- every value registered with :func:`add_secrets` (the configured LLM keys,
  the server's API keys, passwords in the Redis and ArangoDB URLs): start-up
  registers them, so they are caught however they were quoted.

A client's API key is never stored or logged as such: :func:`key_id` is
its short, stable name (in rate-limit and session keys, logs and metrics).
Imports nothing of chatd.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["MASK", "add_secrets", "key_hash", "key_id", "new_key", "redact", "redact_url"]

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:api[_-]?key|access[_-]?token|token|key|secret|password)=)[^&\s#\"']+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[^\s\"',;]+", re.IGNORECASE)
_PROVIDER_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_MIN_SECRET = 6
"""Shorter registered values are not masked: they would mask ordinary words."""

_secrets: set[str] = set()
_known: re.Pattern[str] | None = None


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these values wherever they appear from now on (for a URL: its
    password)."""
    global _known
    for value in values:
        if not value:
            continue
        password = urlsplit(value).password if "://" in value else None
        for secret in (password,) if password else (value,):
            if secret and len(secret) >= _MIN_SECRET:
                _secrets.add(secret)
    if _secrets:
        alternatives = sorted(_secrets, key=len, reverse=True)
        _known = re.compile("|".join(re.escape(s) for s in alternatives))


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***``.

    Every log line passes through here: each pattern runs only where a cheap
    substring test says it could match (a summary line costs ~2 us, not 60)."""
    if _known is not None and any(secret in text for secret in _secrets):
        text = _known.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    if "=" in text and ("?" in text or "&" in text):
        text = _QUERY_SECRET.sub(rf"\g<head>{MASK}", text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<head>{MASK}", text)
    if "sk-" in text:
        text = _PROVIDER_KEY.sub(MASK, text)
    return text


def redact_url(url: str) -> str:
    """A URL as it may be shown: no password, no credential arguments."""
    return redact(url)


def key_hash(key: str) -> str:
    """How a key is written in configuration, so the file holds no key:
    ``sha256:`` and the hex digest (``chatd keys new`` prints it)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh client key: ``ck_`` and 32 URL-safe random characters."""
    return "ck_" + secrets.token_urlsafe(24)


def key_id(key: str) -> str:
    """A client key's name where the key itself must not go: ``k_`` and 12 hex
    digits of its SHA-256 (stable, and no help in guessing the key)."""
    return "k_" + hashlib.sha256(key.encode()).hexdigest()[:12]
