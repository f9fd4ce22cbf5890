"""One HTTP/1.1 client connection: ``h11`` over a trio stream, one request at a time.

The transport (:mod:`chatd.llm.transport`) owns the pool; this module owns
the bytes. On a plain TCP connection reads and writes go straight to the
socket's file descriptor: a read that finds data returns without a trip
through the scheduler, and one that finds none waits in
``trio.lowlevel.wait_readable``, so a streamed body costs one system call
and one wake-up per network read, not a cancel scope and five layers of
generators. TLS goes through ``trio.SSLStream``. h11 writes requests and
reads response heads and bodies, but for a chunked body (an SSE answer, one
chunk per token), which :class:`~chatd.llm.chunked.ChunkedBody` decodes.

Errors come out as trio's and h11's own (``trio.BrokenResourceError``,
``h11.RemoteProtocolError``, ``OSError``); the transport maps them to httpx's.
"""

from __future__ import annotations

import errno
import os
import select
import ssl

import h11
import trio

from chatd.llm.chunked import ChunkedBody

__all__ = ["HTTP11Connection", "open_connection"]

_READ_BYTES = 64 * 1024
_EAGER_READS = 16
"""Reads in a row that may find data waiting before one yields to the scheduler,
so a fast stream cannot keep other tasks from running."""
_JUST_NOW_S = 0.0005


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read (or has reached its end), now.
    ``poll``, not ``select``: a server holds far more than 1,024 descriptors."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Socket:
    """A plain TCP connection, read and written through its file descriptor."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._eager = 0
        self._closed = False
        self._drained_at = -1.0
        """When a read last took everything there was (a short read)."""

    async def receive(self) -> bytes:
        fd = self._fd
        if trio.current_time() - self._drained_at < _JUST_NOW_S:
            # Drained a moment ago: a read now would only fail (a system call
            # and an exception per token of a slow stream), so wait first.
            self._eager = 0
            await trio.lowlevel.wait_readable(fd)
        while True:
            if self._closed:  # the descriptor's number may already be another file's
                raise trio.ClosedResourceError("the connection was closed")
            try:
                data = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                self._eager = 0
                await trio.lowlevel.wait_readable(fd)
                continue
            if len(data) < _READ_BYTES:
                self._drained_at = trio.current_time()
            self._eager += 1
            if self._eager >= _EAGER_READS:
                self._eager = 0
                await trio.lowlevel.checkpoint()
            return data

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise trio.ClosedResourceError("the connection was closed")
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            view = view[sent:]

    def is_dead(self) -> bool:
        """Closed by the peer, or holding bytes nobody asked for: not reusable."""
        return _readable(self._fd)

    def close(self) -> None:
        self._closed = True
        self._stream.socket.close()


class _TLS:
    """A TLS connection: trio's SSLStream does the reading and writing."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream
        self._fd = stream.transport_stream.socket.fileno()

    async def receive(self) -> bytes:
        return bytes(await self._stream.receive_some(_READ_BYTES))

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    def is_dead(self) -> bool:
        return _readable(self._fd)

    def close(self) -> None:
        self._stream.transport_stream.socket.close()


async def open_connection(
    host: str, port: int, *, tls: ssl.SSLContext | None, server_hostname: str
) -> HTTP11Connection:
    """Connect (with happy eyeballs) and, for ``tls``, shake hands."""
    tcp = await trio.open_tcp_stream(host, port)
    if tls is None:
        return HTTP11Connection(_Socket(tcp))
    stream = trio.SSLStream(tcp, tls, server_hostname=server_hostname, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        tcp.socket.close()
        raise
    return HTTP11Connection(_TLS(stream))


class HTTP11Connection:
    """A request's bytes out and its response in, then ready for the next one."""

    def __init__(self, net: _Socket | _TLS) -> None:
        self._net = net
        self._h11 = h11.Connection(h11.CLIENT)
        self._body_done = False
        self._method = b""
        self._chunked: ChunkedBody | None = None
        """The body being read, where it is chunked (h11 reads the rest)."""
        self._keep_alive = False
        self.idle_since = 0.0
        self.closed = False

    async def send_request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Write the whole request (head and body) in one go."""
        conn = self._h11
        self._method = method
        parts = [conn.send(h11.Request(method=method, target=target, headers=headers))]
        if body:
            parts.append(conn.send(h11.Data(data=body)))
        parts.append(conn.send(h11.EndOfMessage()))
        await self._net.send_all(b"".join(p for p in parts if p))

    async def receive_head(self) -> h11.Response:
        """The response's status line and headers (1xx responses skipped)."""
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif isinstance(event, h11.Response):
                if self._method != b"HEAD" and event.status_code not in (204, 304):
                    self._take_chunked_body(event)
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("server closed the connection before answering")
            elif not isinstance(event, h11.InformationalResponse):  # pragma: no cover
                raise h11.RemoteProtocolError(
                    f"unexpected {type(event).__name__} before a response"
                )

    def _take_chunked_body(self, head: h11.Response) -> None:
        """Read a chunked body here, not through h11 (see chatd.llm.chunked)."""
        encodings = b",".join(v for k, v in head.headers if k == b"transfer-encoding")
        if encodings.split(b",")[-1].strip().lower() != b"chunked":
            return
        closing = any(k == b"connection" and b"close" in v.lower() for k, v in head.headers)
        self._keep_alive = head.http_version == b"1.1" and not closing
        self._chunked = ChunkedBody(self._h11.trailing_data[0])

    async def receive_body(self) -> bytes | None:
        """All of the response body that has come so far and not been taken,
        waiting for some if none has; ``None`` once the body is complete.

        An SSE answer sends each token as its own chunk: a read that found
        several returns them together, so a caller that waits between calls
        (the LLM client's coalescing) gets everything that came meanwhile."""
        if self._body_done:
            return None
        chunked = self._chunked
        if chunked is not None:
            while True:
                data = chunked.take()
                if data:
                    return data
                if chunked.done:
                    self._body_done = True
                    return None
                more = await self._read()
                if not more:
                    raise h11.RemoteProtocolError("server closed the connection mid-body")
                chunked.feed(more)
        conn = self._h11
        parts: list[bytes] = []
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                parts.append(event.data)
            elif event is h11.NEED_DATA:
                if parts:
                    break
                await self._receive()
            elif type(event) is h11.EndOfMessage:
                self._body_done = True
                if not parts:
                    return None
                break
            else:  # ConnectionClosed before the end: h11 raised already if the body was cut
                raise h11.RemoteProtocolError("server closed the connection mid-body")
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    async def _receive(self) -> None:
        self._h11.receive_data(await self._read())  # b"": the server closed its end

    async def _read(self) -> bytes:
        try:
            return await self._net.receive()
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                raise trio.BrokenResourceError(str(exc)) from exc
            raise

    def finished(self) -> bool:
        """The exchange is over and the connection can take another request
        (which this call makes ready)."""
        conn = self._h11
        chunked, self._chunked = self._chunked, None
        self._body_done = False
        if chunked is not None:  # h11 never saw the body: a fresh h11 for the next one
            reusable = (
                chunked.done
                and not chunked.leftover
                and self._keep_alive
                and conn.our_state is h11.DONE
            )
            self._h11 = h11.Connection(h11.CLIENT)
            return reusable
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True

    def is_dead(self) -> bool:
        """Closed at the far end (or otherwise unusable) while it sat idle."""
        return self.closed or self._net.is_dead()

    def close(self) -> None:
        """Close now; a read or write waiting on it fails at once."""
        if not self.closed:
            self.closed = True
            self._net.close()
