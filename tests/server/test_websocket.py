"""chatd's own WebSocket, against trio-websocket and raw sockets on loopback.

A tiny server here does what the front door does (peek, read the head,
accept) and echoes each message back, so the WebSocket's own behaviour is
seen without the rest of chatd: the handshake and its refusals, fragments,
pings, the close handshake, the size limit, and a client that stops reading.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WSRequest

from chatd.server.front import read_request_head
from chatd.server.websocket import WebSocket, accept
from chatd.testing import wait_until

Started = Callable[..., Awaitable[tuple[int, list[WebSocket]]]]


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> Started:
    """Start an echo server; its port and the WebSockets it accepted."""

    async def start(
        *, deflate: bool = False, max_message_bytes: int = 1 << 20
    ) -> tuple[int, list[WebSocket]]:
        accepted: list[WebSocket] = []

        async def handle(stream: trio.SocketStream) -> None:
            request = await read_request_head(stream)
            assert request is not None
            ws = await accept(stream, request, deflate=deflate, max_message_bytes=max_message_bytes)
            if ws is None:
                return
            accepted.append(ws)
            while (message := await ws.receive()) is not None:
                ws.send_nowait(message.encode() if isinstance(message, str) else message)
                await ws.drain()
            await ws.close(1000, "")

        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        return listeners[0].socket.getsockname()[1], accepted

    return start


async def test_messages_echo_whole_and_fragmented(echo_server: Started) -> None:
    """Text messages come back; a message sent in fragments arrives as one."""
    port, _ = await echo_server()
    with trio.fail_after(5):
        async with trio_websocket.open_websocket("127.0.0.1", port, "/v1/ws", use_ssl=False) as ws:
            await ws.send_message('{"a": 1}')
            assert await ws.get_message() == '{"a": 1}'
            big = "é" * 100_000  # many frames' worth, multi-byte characters across reads
            await ws.send_message(big)
            assert await ws.get_message() == big


async def test_ping_is_answered_and_close_is_a_handshake(echo_server: Started) -> None:
    """A client's ping gets its pong; a client's close gets the server's close back."""
    port, accepted = await echo_server()
    with trio.fail_after(5):
        async with trio_websocket.open_websocket("127.0.0.1", port, "/v1/ws", use_ssl=False) as ws:
            await ws.ping(b"are you there")
            await ws.aclose(code=1000, reason="bye")
            assert ws.closed is not None and ws.closed.code == 1000
    assert accepted[0].last_received > 0


async def test_a_message_over_the_limit_closes_1009(echo_server: Started) -> None:
    """Far past the limit the connection closes with 1009 (message too big)."""
    port, _ = await echo_server(max_message_bytes=1000)
    client = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        await stream.send_all(client.send(WSRequest(host="x", target="/v1/ws")))
        events: list[object] = []
        while not any(isinstance(e, AcceptConnection) for e in events):
            client.receive_data(await stream.receive_some(4096) or None)
            events.extend(client.events())
        await stream.send_all(client.send(TextMessage("x" * 5000)))
        closed = None
        while closed is None:
            client.receive_data(await stream.receive_some(4096) or None)
            closed = next((e for e in client.events() if isinstance(e, CloseConnection)), None)
    assert closed.code == 1009
    await stream.aclose()


async def handshake(port: int, *lines: str) -> bytes:
    """Send a raw upgrade request; the server's reply head."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = "GET /v1/ws HTTP/1.1\r\nhost: x\r\n" + "".join(f"{line}\r\n" for line in lines)
    await stream.send_all((request + "\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        data = await stream.receive_some(4096)
        if not data:
            break
        reply += data
    await stream.aclose()
    return reply


KEY = "sec-websocket-key: " + base64.b64encode(os.urandom(16)).decode()
UPGRADE = ("upgrade: websocket", "connection: Upgrade")


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ((*UPGRADE, KEY, "sec-websocket-version: 13"), b"101"),
        ((*UPGRADE, "sec-websocket-version: 13"), b"400"),  # no key
        (
            ("upgrade: websocket", KEY, "sec-websocket-version: 13"),
            b"400",
        ),  # no Connection: Upgrade
        ((*UPGRADE, KEY, "sec-websocket-version: 8"), b"426"),
    ],
)
async def test_handshake_and_its_refusals(
    echo_server: Started, lines: tuple[str, ...], status: bytes
) -> None:
    """A valid upgrade gets 101; a bad one a clear status, and the socket closes."""
    port, _ = await echo_server()
    with trio.fail_after(5):
        reply = await handshake(port, *lines)
    assert reply.split(b" ")[1] == status
    if status == b"426":
        assert b"sec-websocket-version: 13" in reply


@pytest.mark.parametrize("deflate", [False, True])
async def test_deflate_only_when_enabled(echo_server: Started, deflate: bool) -> None:
    """permessage-deflate is agreed only when the server allows it."""
    port, _ = await echo_server(deflate=deflate)
    offer = "sec-websocket-extensions: permessage-deflate; client_max_window_bits"
    with trio.fail_after(5):
        reply = await handshake(port, *UPGRADE, KEY, "sec-websocket-version: 13", offer)
    assert (b"permessage-deflate" in reply.lower()) is deflate


async def test_a_client_that_stops_reading_fills_the_buffer(echo_server: Started) -> None:
    """Sends never wait: what the socket will not take is buffered, in order,
    and :meth:`drain` waits for it; a client that then reads gets it all."""
    port, accepted = await echo_server()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /v1/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        f"{KEY}\r\nsec-websocket-version: 13\r\n\r\n".encode()
    )
    with trio.fail_after(10):
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += await stream.receive_some(4096)
        await wait_until(lambda: bool(accepted), within=5)
        ws = accepted[0]
        payload = b"y" * 60_000
        frames = 0
        while not ws.buffered:  # the client reads nothing: the socket fills
            ws.send_nowait(payload)
            frames += 1
        assert frames > 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.drain)
            received = len(reply.split(b"\r\n\r\n", 1)[1])
            expected = frames * (len(payload) + 4)  # a 4-byte header each
            while received < expected:
                received += len(await stream.receive_some(1 << 20))
        assert ws.buffered == 0
    await stream.aclose()
