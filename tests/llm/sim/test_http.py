"""The simulator's small HTTP/1.1 server, driven with raw sockets."""

from __future__ import annotations

import socket
import struct
from functools import partial
from typing import Any

import pytest
import trio

from chatd.llm.sim import http
from chatd.llm.sim.http import Exchange, serve_http

from .openai_wire import receive_until

GUARD_S = 10


async def start(nursery: trio.Nursery, handler: http.Handler, **options: Any) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(partial(serve_http, handler, listeners, **options))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def echo_path(exchange: Exchange) -> None:
    request = exchange.request
    await exchange.respond(200, f"{request.method} {request.path} {len(request.body)}".encode())


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    """Requests sent back to back on one connection get their answers in order."""
    port = await start(nursery, echo_path)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = await read_all(stream)
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"GET /a 0") < data.index(b"POST /b 3") < data.index(b"GET /c 0")


async def test_malformed_request_gets_400_and_close(nursery: trio.Nursery) -> None:
    """Bytes that are not HTTP get a 400 JSON error, then the connection closes."""
    port = await start(nursery, echo_path)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = await read_all(stream)
    assert data.startswith(b"HTTP/1.1 400")
    assert b'"error"' in data


async def test_oversized_body_gets_413(nursery: trio.Nursery, monkeypatch: Any) -> None:
    """A body over the limit is refused before the handler sees it."""
    monkeypatch.setattr(http, "MAX_BODY_BYTES", 10)
    port = await start(nursery, echo_path)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
            await stream.send_all(b"x" * 11)
            data = await read_all(stream)
    assert data.startswith(b"HTTP/1.1 413")


async def test_handler_bug_is_500_and_the_server_lives(nursery: trio.Nursery) -> None:
    """An exception in the handler answers 500 and leaves the server serving."""

    async def broken(exchange: Exchange) -> None:
        if exchange.request.path == "/bug":
            raise RuntimeError("boom")
        await echo_path(exchange)

    port = await start(nursery, broken)
    with trio.fail_after(GUARD_S):
        for path, status in ((b"/bug", b"500"), (b"/fine", b"200")):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                data = await receive_until(stream, b"\r\n\r\n")
                assert data.startswith(b"HTTP/1.1 " + status)


async def test_idle_connection_is_closed(nursery: trio.Nursery) -> None:
    """A connection that sends nothing is closed after the idle timeout."""
    port = await start(nursery, echo_path, idle_timeout_s=0.05)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            assert await read_all(stream) == b""


async def test_reset_connection_cancels_the_response(nursery: trio.Nursery) -> None:
    """A client that resets the connection cancels its handler, which learns why."""
    seen: list[bool] = []
    started, ended = trio.Event(), trio.Event()

    async def sleeper(exchange: Exchange) -> None:
        try:
            started.set()
            await trio.sleep_forever()
        finally:
            seen.append(exchange.client_gone)
            ended.set()

    port = await start(nursery, sleeper)
    with trio.fail_after(GUARD_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await started.wait()
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        await ended.wait()
    assert seen == [True]


async def test_client_that_stops_reading_is_gone(nursery: trio.Nursery) -> None:
    """A write the client does not drain within send_timeout_s ends the response."""
    outcome: list[bool] = []
    gone = trio.Event()

    async def flood(exchange: Exchange) -> None:
        await exchange.start_stream()
        try:
            while True:
                await exchange.send(b"x" * 65536)
        except http.ClientGone:
            outcome.append(exchange.client_gone)
            gone.set()
            raise

    port = await start(nursery, flood, send_timeout_s=0.1)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await gone.wait()
    assert outcome == [True]


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
async def test_content_length_and_head(nursery: trio.Nursery, method: bytes) -> None:
    """Plain answers carry Content-Length; HEAD gets the head only."""
    port = await start(nursery, echo_path)
    with trio.fail_after(GUARD_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(method + b" /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await read_all(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    text = method + b" /x 0"
    assert b"content-length: %d" % len(text) in head.lower()
    assert body == (text if method == b"GET" else b"")
