"""A small HTTP/1.1 server on trio and h11 that knows nothing of the simulator.

The simulated LLM has to carry thousands of slow streams cheaply, so it does
not sit on an ASGI stack: each connection is one task answering requests in
turn (keep-alive) and one task reading the socket. h11 parses requests and
frames responses (``Content-Length`` for plain bodies, chunked for streams).

The reading task is what makes disconnects visible. It keeps reading while a
response is under way, so an EOF or a reset from the client cancels that
response within a scheduler tick, even when the handler is only sleeping
(the time to first token, or a deliberate hang); the handler learns why from
:attr:`Exchange.client_gone`.

Timeouts: a connection idle between requests is closed after
``idle_timeout_s``; a write the client does not drain within
``send_timeout_s`` counts as the client having gone. Everything else waits
inside the response's cancel scope, which the reader, the server's owner or a
shutdown can cancel.

Not supported, as the simulator's clients do not need them: TLS, HTTP/2,
``Expect: 100-continue`` (clients send the body after a short wait anyway).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import NoReturn

import attrs
import h11
import orjson
import structlog
import trio

from chatd.llm.sim.exchange import (
    AbortConnection,
    ClientGone,
    Exchange,
    Handler,
    Request,
)

__all__ = [
    "AbortConnection",
    "ClientGone",
    "Exchange",
    "Handler",
    "Request",
    "serve_http",
]  # (the exchange's names are exchange.py's, re-exported)

log = structlog.get_logger(__name__)

READ_SIZE = 65536
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
# A well-behaved client sends nothing while its request is being answered;
# pipelined requests beyond this many buffered bytes close the connection.
MAX_PIPELINED_BYTES = 256 * 1024
IDLE_TIMEOUT_S = 120.0
SEND_TIMEOUT_S = 60.0


@attrs.frozen
class _Refusal:
    """A request the reader could not accept, to be answered and the connection closed."""

    status: int
    message: str


@attrs.define(eq=False)
class _Reader:
    """The task that reads one connection: requests in, EOF noticed at once."""

    stream: trio.SocketStream
    conn: h11.Connection
    requests: trio.MemorySendChannel[Request | _Refusal]
    exchange: Exchange | None = None
    response_scope: trio.CancelScope | None = None
    _wait_scope: trio.CancelScope | None = attrs.field(default=None, init=False)

    def resume(self) -> None:
        """Parse what arrived during the last response (the writer started a new cycle)."""
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def run(self) -> None:
        with self.requests:
            while True:
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError as exc:
                    await self.requests.send(_Refusal(exc.error_status_hint, str(exc)))
                    return
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    if len(self.conn.trailing_data[0]) > MAX_PIPELINED_BYTES:
                        self._client_gone()
                        return
                    if not await self._receive():
                        self._client_gone()
                        return
                elif isinstance(event, h11.Request):
                    request = await self._read_body(event)
                    if request is None:
                        return
                    await self.requests.send(request)
                    if isinstance(request, _Refusal):
                        return
                else:  # ConnectionClosed or an event a server never sees
                    self._client_gone()
                    return

    async def _receive(self) -> bool:
        """Wait for bytes and feed them to h11; False at EOF or a broken socket.

        The wait is cancellable by :meth:`resume`: a cancelled ``receive_some``
        consumes nothing, so no byte is lost when the writer kicks us.
        """
        with trio.CancelScope() as self._wait_scope:
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except trio.BrokenResourceError:
                return False
            if not data:
                return False
            self.conn.receive_data(bytes(data))  # a no-op for bytes
        self._wait_scope = None
        return True

    async def _read_body(self, head: h11.Request) -> Request | _Refusal | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                return _Refusal(exc.error_status_hint, str(exc))
            if event is h11.NEED_DATA:
                if not await self._receive():
                    self._client_gone()
                    return None
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    return _Refusal(413, f"request body over {MAX_BODY_BYTES} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                self._client_gone()
                return None
        path, _, query = head.target.decode("latin-1").partition("?")
        return Request(
            method=head.method.decode("ascii"),
            path=path,
            query=query,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
            body=b"".join(chunks),
        )

    def _client_gone(self) -> None:
        if self.exchange is not None:
            self.exchange.client_gone = True
        if self.response_scope is not None:
            self.response_scope.cancel()


async def serve_http(
    handler: Handler,
    listeners: list[trio.SocketListener],
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    send_timeout_s: float = SEND_TIMEOUT_S,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP/1.1 on ``listeners`` with ``handler`` until cancelled.

    Cancelling this closes every connection; handlers see ``trio.Cancelled``.
    """
    await trio.serve_listeners(
        partial(
            _serve_connection,
            handler=handler,
            idle_timeout_s=idle_timeout_s,
            send_timeout_s=send_timeout_s,
        ),
        listeners,
        task_status=task_status,
    )


async def _serve_connection(
    stream: trio.SocketStream,
    *,
    handler: Handler,
    idle_timeout_s: float,
    send_timeout_s: float,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    send, receive = trio.open_memory_channel[Request | _Refusal](0)
    reader = _Reader(stream, conn, send)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        try:
            with receive:
                await _answer_requests(reader, receive, handler, idle_timeout_s, send_timeout_s)
        finally:
            nursery.cancel_scope.cancel()


async def _answer_requests(
    reader: _Reader,
    requests: trio.MemoryReceiveChannel[Request | _Refusal],
    handler: Handler,
    idle_timeout_s: float,
    send_timeout_s: float,
) -> None:
    conn, stream = reader.conn, reader.stream
    while True:
        item: Request | _Refusal | None = None
        with trio.move_on_after(idle_timeout_s):
            try:
                item = await requests.receive()
            except trio.EndOfChannel:
                return
        if item is None:
            return
        if isinstance(item, _Refusal):
            await _refuse(conn, stream, item, send_timeout_s)
            return
        exchange = Exchange(item, conn, stream, send_timeout_s)
        with trio.CancelScope() as scope:
            reader.exchange, reader.response_scope = exchange, scope
            try:
                await handler(exchange)
            except (ClientGone, AbortConnection):
                return
            except Exception:
                # A bug in the application: answer 500 if we still can, and
                # never let one request take the whole server down.
                log.exception("sim_http_handler_failed", path=item.path)
                if not exchange.started:
                    await _refuse(conn, stream, _Refusal(500, "internal error"), send_timeout_s)
                return
            finally:
                reader.exchange, reader.response_scope = None, None
        if exchange.client_gone or not exchange.finished or conn.our_state is not h11.DONE:
            return
        if conn.their_state is not h11.DONE:
            return  # the handler answered before reading everything: cannot reuse
        conn.start_next_cycle()
        reader.resume()


async def _refuse(
    conn: h11.Connection, stream: trio.abc.Stream, refusal: _Refusal, send_timeout_s: float
) -> None:
    """Answer a request we will not serve, then let the connection close."""
    if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
        return
    kind = "server_error" if refusal.status >= 500 else "invalid_request_error"
    body = orjson.dumps({"error": {"message": refusal.message, "type": kind, "code": None}})
    try:
        data = conn.send(
            h11.Response(
                status_code=refusal.status,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                ],
            )
        )
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return
    with trio.move_on_after(send_timeout_s), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(data)
