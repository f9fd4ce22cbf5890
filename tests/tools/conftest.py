"""A tiny real HTTP server on a free loopback port, for the HTTP tool's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import attrs
import h11
import httpx
import orjson
import pytest
import trio


@attrs.frozen
class Seen:
    """One request as the server received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class EchoServer:
    """Answers ``/status/N`` with status N, ``/sleep`` never, ``/big`` with 10,000
    characters, and anything else with 200 and the request echoed as JSON."""

    port: int
    seen: list[Seen] = attrs.field(factory=list)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    async def answer(self, request: Seen) -> tuple[int, bytes]:
        """The status and body for ``request``."""
        path = request.target.split("?")[0]
        if path.startswith("/status/"):
            return int(path.removeprefix("/status/")), b"  no such\nthing here  "
        if path == "/sleep":
            await trio.sleep_forever()
        if path == "/big":
            return 200, b"x" * 10_000
        return 200, orjson.dumps(attrs.asdict(request) | {"body": request.body.decode()})

    async def handle(self, stream: trio.SocketStream) -> None:
        """Read one request, answer it, close the connection."""
        conn = h11.Connection(h11.SERVER)
        head: h11.Request | None = None
        body = b""
        async with stream:
            try:
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        head = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert head is not None
                request = Seen(
                    method=head.method.decode(),
                    target=head.target.decode(),
                    headers={k.decode(): v.decode() for k, v in head.headers},
                    body=body,
                )
                self.seen.append(request)
                status, payload = await self.answer(request)
                response = h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "text/plain; charset=utf-8"),
                        ("content-length", str(len(payload))),
                        ("connection", "close"),
                    ],
                )
                await stream.send_all(
                    conn.send(response)
                    + conn.send(h11.Data(data=payload))
                    + conn.send(h11.EndOfMessage())
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                pass  # the client went away; nothing to answer


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> EchoServer:
    """An :class:`EchoServer` on 127.0.0.1, stopped when the test ends."""
    server = EchoServer(port=0)
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """A shared httpx client, closed after the test."""
    async with httpx.AsyncClient() as client:
        yield client
