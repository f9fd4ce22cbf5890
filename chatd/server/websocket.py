"""The server side of a WebSocket (RFC 6455) on a trio socket: chatd's ``/v1/ws``.

:func:`accept` answers an upgrade request that the front door
(:mod:`chatd.server.front`) has read, and returns a :class:`WebSocket`.
wsproto parses what the client sends (frames, pings, close, fragments,
masking, UTF-8) and encodes the control frames; chatd's own text frames are
framed here, as they are the hot path: a token's frame is a two-byte header
and its JSON, written to the socket's descriptor at once when the socket
takes it. Nothing waits to send: :meth:`WebSocket.send_nowait` keeps what the
socket would not take, :attr:`~WebSocket.buffered` says how much, and
:meth:`~WebSocket.drain` waits until it is gone, so the connection decides
what to do with a client that lags (merge its tokens, make its requests
wait, drop it).

Measured against hypercorn's WebSocket under an ASGI app and quart-trio's
(benchmarks/bench_ws_send.py), one message costs a fraction of their server
CPU, and an idle connection holds one task and a few small objects.
"""

from __future__ import annotations

import contextlib
import os
import struct

import attrs
import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, generate_accept_token, split_comma_header

__all__ = ["WebSocket", "accept", "is_upgrade", "refuse"]

_READ_BYTES = 64 * 1024
_CLOSE_WAIT_S = 1.0


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def is_upgrade(request: h11.Request) -> bool:
    """A GET asking to upgrade to a WebSocket."""
    upgrade = _header(request, b"upgrade")
    return request.method == b"GET" and upgrade is not None and upgrade.lower() == b"websocket"


def _reject(status: int, reason: bytes) -> bytes:
    body = reason + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


async def accept(
    stream: trio.SocketStream,
    request: h11.Request,
    *,
    deflate: bool,
    max_message_bytes: int,
) -> WebSocket | None:
    """Complete the handshake for ``request`` (read off ``stream`` already), or
    answer why not (400, 426) and return ``None``."""
    key = _header(request, b"sec-websocket-key")
    connection_tokens = split_comma_header(_header(request, b"connection") or b"")
    version = _header(request, b"sec-websocket-version")
    refusal: bytes | None = None
    upgrading = any(token.lower() == "upgrade" for token in connection_tokens)
    if request.http_version != b"1.1" or key is None or not upgrading:
        refusal = _reject(400, b"Bad Request")
    elif version != b"13":
        refusal = _reject(426, b"Upgrade Required")[:-2] + b"sec-websocket-version: 13\r\n\r\n"
    if refusal is not None:
        await _send_and_close(stream, refusal)
        return None
    assert key is not None
    head = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + generate_accept_token(key),
    ]
    extensions: list[Extension] = []
    offers = _header(request, b"sec-websocket-extensions")
    if deflate and offers:
        extensions = [PerMessageDeflate()]
        agreed = server_extensions_handshake(split_comma_header(offers), extensions)
        if agreed:
            head.append(b"sec-websocket-extensions: " + agreed)
        else:
            extensions = []
    await stream.send_all(b"\r\n".join(head) + b"\r\n\r\n")
    return WebSocket(
        stream,
        Connection(ConnectionType.SERVER, extensions),
        max_message_bytes,
        plain=not extensions,
    )


async def refuse(stream: trio.SocketStream, status: int, reason: bytes) -> None:
    """Answer an upgrade request with ``status`` (plain text) and close."""
    await _send_and_close(stream, _reject(status, reason))


async def _send_and_close(stream: trio.SocketStream, data: bytes) -> None:
    with (
        trio.move_on_after(_CLOSE_WAIT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(data)
    await stream.aclose()


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame (server to client) around ``payload``."""
    size = len(payload)
    if size < 126:
        return b"\x81" + bytes((size,)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


@attrs.define(eq=False)
class WebSocket:
    """One accepted WebSocket: messages in, text frames out without waiting."""

    _stream: trio.SocketStream
    _ws: Connection
    max_message_bytes: int
    plain: bool = True
    """No extension was negotiated: text frames are framed here, not by wsproto."""
    _fd: int = attrs.field(init=False)
    _out: bytearray | None = attrs.field(default=None, init=False)
    _parts: list[str | bytes] = attrs.field(factory=list, init=False)
    _part_bytes: int = attrs.field(default=0, init=False)
    broken: bool = attrs.field(default=False, init=False)
    """A write failed: the peer is gone (the reader sees the end next)."""
    last_received: float = attrs.field(factory=trio.current_time, init=False)
    """When anything (a message, a ping, a pong) last came in."""

    def __attrs_post_init__(self) -> None:
        self._fd = self._stream.socket.fileno()

    @property
    def buffered(self) -> int:
        """Bytes sent that the socket has not taken yet."""
        return len(self._out) if self._out is not None else 0

    async def receive(self) -> str | bytes | None:
        """The next whole message; ``None`` once the connection has closed."""
        ws = self._ws
        while True:
            for event in ws.events():
                if isinstance(event, Message):
                    message = self._message(event)
                    if message is not None:
                        return message
                elif isinstance(event, Ping):
                    self.send_raw(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        self.send_raw(ws.send(event.response()))
                    return None
                # Pong: only its arrival matters (last_received)
            if ws.state is not ConnectionState.OPEN:
                return None
            try:
                data = await self._stream.receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.last_received = trio.current_time()
            ws.receive_data(bytes(data) if data else None)

    def _message(self, event: Message) -> str | bytes | None:  # type: ignore[type-arg]
        self._parts.append(event.data)
        self._part_bytes += len(event.data)
        if self._part_bytes > self.max_message_bytes:
            self._parts, self._part_bytes = [], 0
            self.send_raw(self._ws.send(CloseConnection(1009, "message too big")))
            return None  # the caller sees LOCAL_CLOSING, and the end
        if not event.message_finished:
            return None
        parts, self._parts, self._part_bytes = self._parts, [], 0
        if isinstance(event, TextMessage):
            return parts[0] if len(parts) == 1 else "".join(parts)  # type: ignore[arg-type]
        assert isinstance(event, BytesMessage)
        return b"".join(parts)  # type: ignore[arg-type]

    def send_nowait(self, frame: bytes) -> None:
        """Send ``frame`` (UTF-8 JSON) as one text message, now or once the socket takes it."""
        if self._ws.state is not ConnectionState.OPEN:
            return  # closing: nothing may follow the close frame
        if self.plain:
            self.send_raw(text_frame(frame))
        else:
            self.send_raw(self._ws.send(TextMessage(frame.decode())))

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the client's pong updates :attr:`last_received`."""
        with contextlib.suppress(LocalProtocolError):  # closing: no pings
            self.send_raw(self._ws.send(Ping(payload)))

    def send_raw(self, data: bytes) -> None:
        """Bytes to the socket: written now if it takes them, else kept in order."""
        if self.broken or not data:
            return
        if self._out is not None:
            self._out += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._break(exc)
            return
        if sent < len(data):
            self._out = bytearray(data[sent:])

    async def drain(self) -> None:
        """Wait until the socket has taken everything sent."""
        while self._out is not None and not self.broken:
            try:
                sent = os.write(self._fd, self._out)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            except OSError as exc:
                self._break(exc)
                break
            del self._out[:sent]
            if not self._out:
                self._out = None
        await trio.lowlevel.checkpoint()

    def _break(self, exc: OSError) -> None:
        """The peer is gone (``EPIPE``, ``ECONNRESET``...): drop what waits; the
        reader finds the end of the stream."""
        self.broken = True
        self._out = None
        with contextlib.suppress(OSError):
            self._stream.socket.shutdown(trio.socket.SHUT_RDWR)

    async def close(self, code: int, reason: str) -> None:
        """The closing handshake (bounded), then the TCP connection."""
        with trio.move_on_after(_CLOSE_WAIT_S) as closing:
            closing.shield = True
            if self._ws.state is ConnectionState.OPEN and not self.broken:
                self.send_raw(self._ws.send(CloseConnection(code, reason or None)))
            await self.drain()
            while self._ws.state is ConnectionState.LOCAL_CLOSING and not self.broken:
                await self._wait_for_close()  # the client's close frame, then the TCP close
        self._stream.socket.close()

    async def _wait_for_close(self) -> None:
        try:
            data = await self._stream.receive_some(_READ_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        self._ws.receive_data(bytes(data) if data else None)
        for _event in self._ws.events():
            pass  # until its close frame: state CLOSED

    def aborted(self) -> None:
        """Close the socket at once (a client that stopped reading)."""
        self.broken = True
        self._out = None
        self._stream.socket.close()
