"""The one reach into trio-websocket's internals: its connection's TCP stream.

trio-websocket 0.12 (checked against 0.11 and 0.12.2) leaves the underlying
stream open when the peer closed or dropped the connection first, and offers
no public way to drop a connection without the closing handshake (what a
network failure looks like, which tests need). Both use the connection's
private ``_stream``: here, and nowhere else. ``tests/test_trio_websocket_compat.py``
fails when the attribute goes; pyproject.toml bounds the version below 0.13.
"""

from __future__ import annotations

import trio
from trio_websocket import WebSocketConnection

__all__ = ["close_stream", "stream_of"]


def stream_of(ws: WebSocketConnection) -> trio.abc.Stream:
    """The TCP (or TLS) stream under ``ws``."""
    stream: trio.abc.Stream = ws._stream
    return stream


async def close_stream(ws: WebSocketConnection) -> None:
    """Close the stream under ``ws`` at once: no closing handshake (harmless
    when it is closed already)."""
    await trio.aclose_forcefully(stream_of(ws))
