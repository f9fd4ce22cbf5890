"""Clients that misbehave at volume, end to end: one that floods frames
without reading is dropped, a pipelined burst of 1,000 chats is answered
whole, and hundreds of resets mid-handshake harm nobody else."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import orjson
import trio
import trio.lowlevel
import trio_websocket

from chatd.config import JanitorSettings, ServerSettings
from chatd.testing import Chatd, open_chat_client, open_chatd, wait_until
from chatd.trio_websocket_compat import close_stream
from tests.e2e.conftest import MakeSettings, ask


async def test_client_flooding_frames_without_reading_is_dropped(
    make_settings: MakeSettings,
) -> None:
    """Replies pile up for nobody: a client that only sends is read no further
    once its unread replies pass four times server.send_buffer_bytes (here
    each reply is an error echoing a long unknown type), and is dropped as
    stalled by the janitor."""
    settings = make_settings(
        server=ServerSettings(send_buffer_bytes=16 * 1024),
        janitor=JanitorSettings(interval_s=0.1, stalled_client_s=1),
    )
    frame = orjson.dumps({"type": "x" * 30_000}).decode()
    with trio.fail_after(60):  # the closing too: a hang fails here, not in CI's timeout
        await flood_until_dropped(settings, frame)


async def flood_until_dropped(settings: Any, frame: str) -> None:
    async with (
        open_chatd(settings) as server,
        trio_websocket.open_websocket_url(server.ws_url, disconnect_timeout=5) as ws,
    ):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    with contextlib.suppress(trio_websocket.ConnectionClosed):
                        for _ in range(2000):
                            await ws.send_message(frame)

                nursery.start_soon(flood)
                await wait_until(lambda: not server.running.state.connections, within=15)
                nursery.cancel_scope.cancel()
        await close_stream(ws)  # trio-websocket leaves it open after an abort
        # Take what chatd sent before it dropped us: trio-websocket's reader may be
        # waiting to hand over a reply nobody reads, and when the flood was cancelled
        # mid-send (not refused), its close leaves that wait for ever. Once the reader
        # meets the closed stream, the connection ends.
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()


async def test_a_pipelined_burst_is_answered_whole(make_settings: MakeSettings) -> None:
    """1,000 chats sent back to back by a client that reads: none is dropped;
    each gets exactly one terminal event (an answer, or overloaded past the
    per-connection cap), and the connection stays open."""
    settings = make_settings(server=ServerSettings(send_buffer_bytes=16 * 1024))
    async with (
        open_chatd(settings) as server,
        open_chat_client(server.ws_url, read_delay_s=0.002) as client,
    ):
        ids = [f"b{i}" for i in range(1000)]
        with trio.fail_after(60):
            for request_id in ids:
                await client.chat(request_id, f"hello there, number {request_id}")
            for request_id in ids:
                await client.finish(request_id)
        for request_id in ids:
            types = client.types(request_id)
            assert sum(t in ("done", "error") for t in types) == 1, (request_id, types)
        codes = {e["code"] for i in ids for e in client.events[i] if e["type"] == "error"}
        assert codes <= {"overloaded"}
        assert client.ws.closed is None


async def test_clients_resetting_mid_handshake_harm_nobody(chatd: Chatd) -> None:
    """Hundreds of clients that send a WebSocket upgrade and reset at once
    (some while chatd answers the handshake) end only their own connections."""
    port = int(chatd.url.rsplit(":", 1)[1])
    head = (
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reset = struct.pack("ii", 1, 0)  # SO_LINGER 0: close sends RST
    with trio.fail_after(30):
        for i in range(300):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(head)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            sock.close()
            if i % 3 == 0:
                await trio.lowlevel.checkpoint()
        async with open_chat_client(chatd.ws_url) as client:
            done = await ask(client, "after", "hello there")
    assert done["type"] == "done"
