"""chatd.trio_websocket_compat still fits the trio-websocket installed, and no
other module reads a private attribute of a library's."""

from __future__ import annotations

import re
from pathlib import Path

import trio
import trio_websocket

from chatd.trio_websocket_compat import close_stream, stream_of

ROOT = Path(__file__).resolve().parent.parent


async def test_the_stream_under_a_connection_is_where_compat_looks() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        port = server.port
        async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
            assert isinstance(stream_of(ws), trio.SocketStream)
            await close_stream(ws)
            await close_stream(ws)  # twice is harmless
        nursery.cancel_scope.cancel()


def test_only_compat_modules_read_private_attributes_of_libraries() -> None:
    """``ws._stream`` and its like: only in a ``*_compat.py`` module."""
    pattern = re.compile(r"\b(ws|websocket|self\._ws|client\.ws|self\.ws)\._stream\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("chatd", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if not path.name.endswith("_compat.py") and path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
