"""chatd's trio-native httpx transport against real servers on loopback.

Each server here is a few lines of trio that answers (or misbehaves) the way
a test needs; the transport is driven through ``httpx.AsyncClient``, as chatd
drives it. The LLM client's own tests run over this transport and over
httpx's default one (tests/e2e/test_llm_client.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import httpx
import pytest
import trio
import trustme

from chatd.llm.transport import BODY, ResponseBody, TrioTransport
from chatd.testing import wait_until

Handler = Callable[[trio.SocketStream], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[str]]
"""The ``serve`` fixture: starts a server running a handler; its base URL."""


@pytest.fixture
async def serve(nursery: trio.Nursery) -> Serve:
    """Start a TCP server running ``handler`` per connection; its base URL."""

    async def start(handler: Handler) -> str:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    return start


class HTTPServer:
    """An h11 server: each request is answered by ``respond``; counts connections."""

    def __init__(self, body: bytes = b"hello", chunks: int = 1) -> None:
        self.body, self.chunks = body, chunks
        self.connections = 0
        self.disconnects = 0
        self.requests: list[h11.Request] = []

    async def __call__(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(conn, stream)
                if isinstance(event, h11.ConnectionClosed) or event is None:
                    return
                assert isinstance(event, h11.Request)
                self.requests.append(event)
                while not isinstance(await self._next(conn, stream), h11.EndOfMessage):
                    pass
                await stream.send_all(
                    conn.send(
                        h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
                    )
                    or b""
                )
                for _ in range(self.chunks):
                    await stream.send_all(conn.send(h11.Data(data=self.body)) or b"")
                    await trio.lowlevel.checkpoint()
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            self.disconnects += 1

    async def _next(self, conn: h11.Connection, stream: trio.SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await stream.receive_some(65536)
            if not data:
                self.disconnects += 1
                return None
            conn.receive_data(data)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=TrioTransport(max_connections=4)) as http:
        yield http


async def get_in_turn(http: httpx.AsyncClient, url: str, times: int) -> list[bytes]:
    """GET ``url`` ``times`` times, one after another (5 s at most in all); the bodies."""
    with trio.fail_after(5):
        return [(await http.get(url)).content for _ in range(times)]


async def test_get_and_post_through_httpx(serve: Serve, client: httpx.AsyncClient) -> None:
    """A request's method, path, headers and body reach the server; the body comes back."""
    server = HTTPServer(b"pong", chunks=3)
    url = await serve(server)
    with trio.fail_after(5):
        response = await client.post(url + "/v1/x?y=1", content=b'{"a": 1}', headers={"x-k": "v"})
    assert response.status_code == 200
    assert response.content == b"pongpongpong"
    assert response.http_version == "HTTP/1.1"
    (request,) = server.requests
    assert (request.method, request.target) == (b"POST", b"/v1/x?y=1")
    assert (b"x-k", b"v") in list(request.headers)


async def test_one_connection_is_reused_and_kept_idle(serve: Serve) -> None:
    """Requests one after another share one kept-alive connection."""
    server = HTTPServer()
    url = await serve(server)
    transport = TrioTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        assert await get_in_turn(http, url, 5) == [b"hello"] * 5
        (pool,) = transport.statistics().values()
        assert (pool.in_use, pool.idle) == (0, 1)
    assert server.connections == 1


async def test_per_origin_limit_and_pool_timeout(serve: Serve) -> None:
    """At most ``max_connections`` in use; one more request waits, and times out as httpx does."""
    server = HTTPServer(chunks=1)
    url = await serve(server)
    transport = TrioTransport(max_connections=2)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=0.2)) as http:
        with trio.fail_after(5):
            held = [await http.send(http.build_request("GET", url), stream=True) for _ in range(2)]
            assert transport.statistics()[url + ""].in_use == 2
            with pytest.raises(httpx.PoolTimeout):
                await http.get(url)
            await held[0].aclose()  # unread: its connection is closed, its slot freed
            assert (await http.get(url)).content == b"hello"
            await held[1].aread()
    assert server.connections == 3


async def test_many_concurrent_requests_share_the_limit(serve: Serve) -> None:
    """50 requests at once over a limit of 4: all answered, never more than 4 connections."""
    server = HTTPServer(chunks=5)
    url = await serve(server)
    transport = TrioTransport(max_connections=4)
    results: list[bytes] = []
    async with httpx.AsyncClient(transport=transport) as http:

        async def one() -> None:
            results.append((await http.get(url)).content)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(one)
    assert results == [b"hello" * 5] * 50
    assert server.connections <= 4


async def test_a_body_closed_early_closes_its_connection(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    """Leaving a response before its end closes the connection: the server sees it go."""
    server = HTTPServer(b"x" * 1000, chunks=10_000)
    url = await serve(server)
    with trio.fail_after(5):
        async with client.stream("GET", url) as response:
            assert await response.extensions[BODY].receive_some()
        await wait_until(lambda: server.disconnects > 0, within=2)


async def test_receive_some_reads_without_timeouts(serve: Serve, client: httpx.AsyncClient) -> None:
    """``extensions[BODY]`` reads the body piece by piece, then ``None``; the
    connection goes back to the pool at the end."""
    url = await serve(HTTPServer(b"abc", chunks=4))
    with trio.fail_after(5):
        async with client.stream("GET", url) as response:
            body = response.extensions[BODY]
            assert isinstance(body, ResponseBody)
            pieces = []
            while (piece := await body.receive_some()) is not None:
                pieces.append(piece)
    assert b"".join(pieces) == b"abc" * 4


async def test_a_connection_closed_by_the_server_while_idle_is_replaced(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    """A kept-alive connection the server closed is noticed at checkout, not sent on."""

    async def one_request_then_close(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(await stream.receive_some(65536))
        assert isinstance(conn.next_event(), h11.Request)
        # keep-alive announced, then the server closes anyway (an idle timeout)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await stream.aclose()

    url = await serve(one_request_then_close)
    with trio.fail_after(5):
        assert (await client.get(url)).content == b"ok"
        await trio.sleep(0.05)  # the FIN arrives
        assert (await client.get(url)).content == b"ok"


async def test_connections_past_descriptor_1024(serve: Serve) -> None:
    """A busy server holds thousands of descriptors: checkout's check of an idle
    connection works past select()'s limit of 1,024."""
    server = HTTPServer()
    url = await serve(server)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        async with httpx.AsyncClient(transport=TrioTransport()) as http:
            assert await get_in_turn(http, url, 3) == [b"hello"] * 3
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert server.connections == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",  # an extension, a trailer
        b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    ],
)
@pytest.mark.parametrize("close", [False, True])
async def test_chunked_bodies_and_keep_alive(serve: Serve, reply: bytes, close: bool) -> None:
    """A chunked body (chatd decodes those itself) comes out whole; the
    connection is reused unless the server said ``Connection: close``."""
    connections: list[int] = []

    async def chunked(stream: trio.SocketStream) -> None:
        connections.append(1)
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some(65536):
                head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                await stream.send_all(head + (b"connection: close\r\n" if close else b"") + b"\r\n")
                await stream.send_all(reply)
                if close:
                    await stream.aclose()
                    return

    url = await serve(chunked)
    async with httpx.AsyncClient(transport=TrioTransport()) as http:
        assert await get_in_turn(http, url, 2) == [b"hello"] * 2
    assert len(connections) == (2 if close else 1)


async def test_keepalive_expiry(serve: Serve) -> None:
    """A connection idle for longer than ``keepalive_expiry`` is not reused."""
    server = HTTPServer()
    url = await serve(server)
    async with httpx.AsyncClient(transport=TrioTransport(keepalive_expiry=0.05)) as http:
        with trio.fail_after(5):
            await http.get(url)
            await trio.sleep(0.1)
            await http.get(url)
    assert server.connections == 2


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening: httpx.ConnectError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(transport=TrioTransport()) as http:
        with trio.fail_after(5), pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_connect_timeout() -> None:
    """A listener that never accepts (its queue full): httpx.ConnectTimeout in time."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue; further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            timeout = httpx.Timeout(5, connect=0.3)
            async with httpx.AsyncClient(transport=TrioTransport(), timeout=timeout) as http:
                with trio.fail_after(5), pytest.raises(httpx.ConnectTimeout):
                    await http.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()


async def test_read_timeout(serve: Serve) -> None:
    """A server that reads the request and never answers: httpx.ReadTimeout."""

    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    url = await serve(silent)
    timeout = httpx.Timeout(5, read=0.2)
    async with httpx.AsyncClient(transport=TrioTransport(), timeout=timeout) as http:
        with trio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            await http.get(url)


async def test_write_timeout(serve: Serve) -> None:
    """A server that never reads a large body: httpx.WriteTimeout."""

    async def deaf(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    url = await serve(deaf)
    timeout = httpx.Timeout(5, write=0.3)
    async with httpx.AsyncClient(transport=TrioTransport(), timeout=timeout) as http:
        with trio.fail_after(5), pytest.raises(httpx.WriteTimeout):
            await http.post(url, content=b"x" * (64 << 20))


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",  # then the server closes
        b"",  # closes without a word
    ],
)
async def test_broken_servers_are_protocol_errors(
    serve: Serve, client: httpx.AsyncClient, reply: bytes
) -> None:
    """Garbage, a body cut short, or silence: httpx.RemoteProtocolError (a TransportError)."""

    async def broken(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(reply)
        await stream.aclose()

    url = await serve(broken)
    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        await client.get(url)


async def test_tls(nursery: trio.Nursery) -> None:
    """https origins go through trio.SSLStream, verified against the given context."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server = HTTPServer(b"secret")

    async def tls_handler(stream: trio.SocketStream) -> None:
        tls_stream = trio.SSLStream(stream, server_ctx, server_side=True)
        await server(tls_stream)  # type: ignore[arg-type]

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, tls_handler, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with httpx.AsyncClient(transport=TrioTransport(verify=client_ctx)) as http:
        assert await get_in_turn(http, f"https://localhost:{port}/", 2) == [b"secret"] * 2
    assert server.connections == 1
    async with httpx.AsyncClient(transport=TrioTransport()) as http:  # the system's CAs
        with trio.fail_after(5), pytest.raises(httpx.ConnectError):
            await http.get(f"https://localhost:{port}/")


async def test_unsupported_scheme() -> None:
    """Only http and https."""
    async with httpx.AsyncClient(transport=TrioTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")
