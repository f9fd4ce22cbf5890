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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["host_allowed", "is_loopback", "origin_allowed"]

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
