"""Origin and Host checks: cross-site WebSocket hijacking and DNS rebinding."""

from __future__ import annotations

import pytest

from chatd.server.origins import host_allowed, is_loopback, origin_allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "127.0.0.1:8080", [], True),  # no Origin: not a page
        ("http://127.0.0.1:8080", "127.0.0.1:8080", [], True),  # our own page
        ("http://localhost:3000", "127.0.0.1:8080", [], True),  # a local dev page
        ("https://[::1]:8443", "127.0.0.1:8080", [], True),
        ("http://evil.example", "127.0.0.1:8080", [], False),
        ("https://attacker.test:8443", "127.0.0.1:8080", [], False),
        ("null", "127.0.0.1:8080", [], False),
        ("file://", "127.0.0.1:8080", [], False),
        ("https://chat.example.com", "chat.example.com", [], True),  # own, behind a proxy
        ("https://chat.example.com", "api.example.com", [], False),
        ("https://app.example", "api.example", ["https://app.example/"], True),
        ("http://localhost:3000", "api.example", ["https://app.example"], False),
        ("http://evil.example", "api.example", ["*"], True),
        ("null", "api.example", ["null"], True),
    ],
)
def test_origin_allowed(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


@pytest.mark.parametrize(
    ("host_header", "listening_on", "ok"),
    [
        ("127.0.0.1:8080", "127.0.0.1", True),
        ("localhost:8080", "127.0.0.1", True),
        ("[::1]:8080", "::1", True),
        (None, "127.0.0.1", True),
        ("rebind.evil.example:8080", "127.0.0.1", False),
        ("rebind.evil.example", "localhost", False),
        ("chat.example.com", "0.0.0.0", True),
        ("anything", "10.0.0.5", True),
    ],
)
def test_host_allowed(host_header: str | None, listening_on: str, ok: bool) -> None:
    assert host_allowed(host_header, listening_on) is ok
