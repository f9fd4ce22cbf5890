"""Who may drive chatd from a browser: the ``Origin`` and ``Host`` checks.

A web page can open a WebSocket to any address and post ``text/plain`` to
any URL; the browser only says where the page came from (``Origin``). So a
WebSocket upgrade or a chat from a browser is served only when its origin
is allowed: one of ``server.allowed_origins`` (``"*"`` allows every one),
or, with none configured, chatd's own origin and loopback pages
(``http://localhost:3000``, ``http://127.0.0.1:8080``...). A request without
``Origin`` does not come from a page (curl, SDKs, ``chatd chat``) and is
not refused for that.

DNS rebinding points a name the attacker owns at 127.0.0.1, making the
page's origin the attacker's and chatd its "own" server: when chatd listens
on a loopback address, the ``Host`` a request names must be a loopback
name too.

:func:`guard_http` applies both to every HTTP request (and requires JSON for
chats); ``chatd.server.app.serve_websocket`` to WebSocket upgrades.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

from chatd.config import ServerSettings

__all__ = ["guard_http", "host_allowed", "is_loopback", "origin_allowed", "warn_if_open"]

log = structlog.get_logger("chatd.server")

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, without port) names this machine's loopback."""
    host = host.strip("[]").lower().rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The name in a ``Host`` header, without its port."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def host_allowed(host_header: str | None, listening_on: str) -> bool:
    """Whether a request naming ``Host: host_header`` may be served by a
    server listening on ``listening_on`` (refused: a loopback server named by
    a name that is not loopback, the sign of DNS rebinding)."""
    if not is_loopback(listening_on):
        return True  # on a network address, names are the proxy's business
    if not host_header:
        return True  # HTTP/1.0 without Host: not from a browser
    return is_loopback(_hostname(host_header))


def origin_allowed(origin: str | None, host_header: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request from a page at ``origin`` may be served."""
    if origin is None:
        return True
    origin = origin.strip()
    if "*" in allowed:
        return True
    if allowed:
        return origin.rstrip("/").lower() in {a.rstrip("/").lower() for a in allowed}
    if origin == "null":  # sandboxed frames, files: never by default
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if is_loopback(parts.hostname):
        return True
    return host_header is not None and parts.netloc.lower() == host_header.strip().lower()


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

_CORS_PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, POST"),
    (b"access-control-allow-headers", b"authorization, content-type, accept"),
    (b"access-control-max-age", b"600"),
]


_JSON_POSTS = frozenset({"/v1/chat", "/v1/chat/completions"})


def guard_http(app: ASGIApp, listening_on: str, allowed: Sequence[str]) -> ASGIApp:
    """``app`` behind the checks for every HTTP request: a ``Host`` that is not
    loopback on a loopback server, or an ``Origin`` not allowed, is refused
    (403); chats (``POST /v1/chat``, ``/v1/chat/completions``) need
    ``Content-Type: application/json`` (415),
    so no page can post one as a CORS-simple ``text/plain`` request. Allowed
    cross-origin pages get CORS headers (and preflights an answer); others
    get none."""

    async def guarded(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin1") for k, v in scope["headers"]}
        host, origin = headers.get(b"host"), headers.get(b"origin")
        if not host_allowed(host, listening_on):
            await _refuse(send, 403, "forbidden", "this server answers to a loopback name only")
            return
        if not origin_allowed(origin, host, allowed):
            await _refuse(send, 403, "forbidden", "this page's origin is not allowed")
            return
        cross = origin is not None and urlsplit(origin).netloc.lower() != (host or "").lower()
        if cross and scope["method"] == "OPTIONS":
            assert origin is not None
            await _respond(send, 204, b"", _cors(origin) + _CORS_PREFLIGHT)
            return
        if scope["path"] in _JSON_POSTS and scope["method"] == "POST":
            kind = headers.get(b"content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                await _refuse(send, 415, "bad_request", "a chat's body must be application/json")
                return
        if not cross:
            await app(scope, receive, send)
            return
        assert origin is not None

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_cors(origin)]}
            await send(message)

        await app(scope, receive, send_with_cors)

    return guarded


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin1")), (b"vary", b"origin")]


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await _respond(send, status, body, [(b"content-type", b"application/json")])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def warn_if_open(settings: ServerSettings) -> None:
    """Say so at start-up when chatd listens beyond loopback with no API keys."""
    server = settings
    if not is_loopback(server.host) and not server.api_keys:
        log.warning(
            "listening beyond loopback with no API keys: anyone who can reach "
            f"{server.host}:{server.port} can chat (set server.api_keys; chatd keys new)",
            startup=True,
        )
