"""Secrets never shown: what redaction masks, and what it leaves alone."""

from __future__ import annotations

import io

import orjson
import pytest
import structlog

from chatd.config import LogSettings
from chatd.observability.logging import configure_logging
from chatd.redaction import add_secrets, key_id, redact, redact_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://svc:hunter2pass@llm:8000/v1", "http://svc:***@llm:8000/v1"),
        ("redis://:pw12345@redis:6379/0", "redis://:***@redis:6379/0"),
        ("cannot reach http://user@host/v1", "cannot reach http://user@host/v1"),
        (
            "Incorrect API key provided: Bearer sk-secret123",
            "Incorrect API key provided: Bearer ***",
        ),
        ('{"authorization": "bearer abc.def"}', '{"authorization": "bearer ***"}'),
        ("key sk-proj-AbC123xyz leaked", "key *** leaked"),
        ("GET /v1/ws?api_key=s3cret&lang=en", "GET /v1/ws?api_key=***&lang=en"),
        ("https://x/y?token=abc#frag", "https://x/y?token=***#frag"),
        ("what is 17*23? a=b & c", "what is 17*23? a=b & c"),
        ("the quick brown fox", "the quick brown fox"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    """URL passwords, credential arguments, bearer tokens and provider keys go."""
    assert redact(text) == shown


def test_registered_secrets_are_masked_however_quoted() -> None:
    """A configured value is masked wherever it turns up; a URL gives its password."""
    add_secrets(["my-configured-key-42", "https://u:arango-pass-9@db:8529", None, "abc"])
    assert redact("used my-configured-key-42 here") == "used *** here"
    assert redact("password arango-pass-9 seen") == "password *** seen"
    assert redact("abc stays (too short to mask safely)") == "abc stays (too short to mask safely)"
    assert redact_url("https://u:arango-pass-9@db:8529") == "https://u:***@db:8529"


def test_key_id_is_stable_and_not_the_key() -> None:
    """A key's id is short, the same each time, and does not contain the key."""
    assert key_id("sesame") == key_id("sesame") != key_id("sesame2")
    assert "sesame" not in key_id("sesame") and len(key_id("sesame")) == 14


def test_log_lines_are_redacted() -> None:
    """Every line chatd logs passes through redaction, exceptions included."""
    out = io.StringIO()
    saved = structlog.get_config()
    configure_logging(LogSettings(format="json"), out)
    try:
        log = structlog.get_logger("test")
        log.info("using LLM", llm_url="http://svc:hunter2pass@llm/v1")
        try:
            raise RuntimeError("Bearer sk-abcdef123456 refused")
        except RuntimeError:
            log.exception("failed")
    finally:
        structlog.configure(**saved)
    text = out.getvalue()
    assert "hunter2pass" not in text and "sk-abcdef123456" not in text
    first = orjson.loads(text.splitlines()[0])
    assert first["llm_url"] == "http://svc:***@llm/v1"
