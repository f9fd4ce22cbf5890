"""The front door: one listening socket, each connection sent where it belongs.

A new connection's request head is peeked at (``MSG_PEEK``: the bytes stay in
the socket). A WebSocket upgrade to ``/v1/ws`` is chatd's own
(:mod:`chatd.server.websocket`): its head is read off and the handshake
answered; anything else, the head still unread, goes to hypercorn and the
quart app (:mod:`chatd.server.hypercorn_compat`) exactly as if hypercorn had
accepted it. A head that does not arrive whole within ``_HEAD_WAIT_S`` or
``_HEAD_LIMIT`` bytes is left to hypercorn, which has its own limits.

Each connection's task runs in ``handlers``, the nursery the caller owns, so
the caller decides how long connections may outlive the listener (a drain).
Each runs behind a barrier: a client that goes mid-handshake ends only its
own connection, and anything else one connection raises is reported
(``on_failure``) and closes that connection, never the nursery they share.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable

import h11
import trio

from chatd.server.hypercorn_compat import ServeHTTP

__all__ = ["ServeWebSocket", "read_request_head", "serve_front_door"]

ServeWebSocket = Callable[[trio.SocketStream, h11.Request], Awaitable[None]]
"""Serve one WebSocket whose upgrade request (given) has been read off the stream."""

_HEAD_LIMIT = 16 * 1024
_HEAD_WAIT_S = 10.0
_MORE_OF_THE_HEAD_S = 0.01


async def _peek_head(stream: trio.SocketStream) -> bytes | None:
    """The request head, still unread in the socket; ``b""`` if it is not whole
    (yet, or ever); ``None`` if the client closed without a word."""
    sock = stream.socket
    with trio.move_on_after(_HEAD_WAIT_S):
        while True:
            try:
                data = await sock.recv(_HEAD_LIMIT, socket.MSG_PEEK)
            except OSError:
                return None
            if not data:
                return None
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                return data[: end + 4]
            if len(data) >= _HEAD_LIMIT:
                break
            # Peeked bytes keep the socket readable: wait for the rest by time.
            await trio.sleep(_MORE_OF_THE_HEAD_S)
    return b""


def _request(head: bytes) -> h11.Request | None:
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(head)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


async def _dispatch(
    websocket_path: bytes,
    serve_websocket: ServeWebSocket,
    serve_http: ServeHTTP,
    stream: trio.SocketStream,
) -> None:
    head = await _peek_head(stream)
    if head is None:
        await stream.aclose()
        return
    request = _request(head) if head else None
    if request is not None and request.target.partition(b"?")[0] == websocket_path:
        upgrade = next((v for k, v in request.headers if k == b"upgrade"), b"")
        if upgrade.lower() == b"websocket":
            await _consume(stream, len(head))
            await serve_websocket(stream, request)
            return
    await serve_http(stream)


async def _consume(stream: trio.SocketStream, size: int) -> None:
    """Read off the ``size`` bytes already peeked at."""
    while size > 0:
        size -= len(await stream.receive_some(size))


async def read_request_head(stream: trio.SocketStream) -> h11.Request | None:
    """Read the request head off ``stream``: the request, or ``None`` if none
    that parses came. For serving a WebSocket without the front door (the
    tests and benchmarks of :mod:`chatd.server.websocket`)."""
    head = await _peek_head(stream)
    request = _request(head) if head else None
    if head and request is not None:
        await _consume(stream, len(head))
    return request


async def _guarded(
    dispatch: Callable[[trio.SocketStream], Awaitable[None]],
    on_failure: Callable[[str, BaseException], None],
    stream: trio.SocketStream,
) -> None:
    """One connection's whole life, its failures kept to itself."""
    try:
        await dispatch(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went mid-way (a reset during the handshake, say)
    except Exception as exc:
        on_failure("connection_setup", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_front_door(
    listener: socket.socket,
    *,
    websocket_path: str,
    serve_websocket: ServeWebSocket,
    serve_http: ServeHTTP,
    handlers: trio.Nursery,
    on_failure: Callable[[str, BaseException], None],
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``listener`` (which this closes on exit) until cancelled; each
    connection's task goes to ``handlers``; ``on_failure(task, error)`` hears
    what a connection raised."""
    dispatch = functools.partial(
        _dispatch, websocket_path.encode("ascii"), serve_websocket, serve_http
    )
    handler = functools.partial(_guarded, dispatch, on_failure)
    await trio.serve_listeners(
        handler,
        [trio.SocketListener(trio.socket.from_stdlib_socket(listener))],
        handler_nursery=handlers,
        task_status=task_status,
    )
