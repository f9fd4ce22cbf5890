"""One request and its response on the simulator's HTTP server
(:mod:`chatd.llm.sim.http`): what a handler reads (:class:`Request`) and how
it answers (:class:`Exchange`: a whole body, or a chunked stream), and the
two ways a response ends early (:class:`ClientGone`, :class:`AbortConnection`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import attrs
import h11
import trio

__all__ = ["AbortConnection", "ClientGone", "Exchange", "Handler", "HeaderList", "Request"]


HeaderList = Sequence[tuple[bytes, bytes]]


@attrs.frozen
class Request:
    """One complete HTTP request: head and body, read before the handler runs."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in arrival order
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (repeated headers joined with ``", "``)."""
        values = [value for key, value in self.headers if key == name.lower()]
        return ", ".join(values) if values else None


class ClientGone(Exception):
    """The client closed or broke the connection, or stopped reading it."""


class AbortConnection(Exception):
    """Raised by a handler to drop the connection at once, mid-response if need be."""


Handler = Callable[["Exchange"], Awaitable[None]]


@attrs.define(eq=False)
class Exchange:
    """One request and the means to answer it, handed to the application.

    Answer with :meth:`respond`, or with :meth:`start_stream`, :meth:`send`
    (as often as needed) and ``send(..., end=True)`` or :meth:`end_stream`.
    Sends only yield to the scheduler when the socket is full: a handler that
    loops must checkpoint on its own.
    """

    request: Request
    _conn: h11.Connection
    _stream: trio.SocketStream
    _send_timeout_s: float
    client_gone: bool = attrs.field(default=False, init=False)
    started: bool = attrs.field(default=False, init=False)
    finished: bool = attrs.field(default=False, init=False)
    _chunked: bool = attrs.field(default=False, init=False)
    _fileno: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._fileno = self._stream.socket.fileno()

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"application/json",
        headers: HeaderList = (),
    ) -> None:
        """Send a whole response with a ``Content-Length``."""
        head = [
            (b"content-type", content_type),
            (b"content-length", b"%d" % len(body)),
            *headers,
        ]
        data = self._encode(h11.Response(status_code=status, headers=head))
        if body and self.request.method != "HEAD":
            data += self._encode(h11.Data(data=body))
        data += self._encode(h11.EndOfMessage())
        self.started = True
        await self._write(data)
        self.finished = True

    async def start_stream(
        self,
        status: int = 200,
        *,
        content_type: bytes = b"text/event-stream",
        headers: HeaderList = (),
    ) -> None:
        """Send the head of a streamed (chunked) response."""
        head = [(b"content-type", content_type), *headers]
        data = self._encode(h11.Response(status_code=status, headers=head))
        # h11 picks the framing: chunked for HTTP/1.1 peers, close-delimited
        # for HTTP/1.0 ones. send() frames chunks itself only in the first case.
        self._chunked = b"\r\ntransfer-encoding: chunked\r\n" in data.lower()
        self.started = True
        await self._write(data)

    async def send(self, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` as one chunk; with ``end``, finish the response in the same write."""
        if not data:
            payload = b""
        elif self._chunked:
            # The hot path of every stream. h11's chunked writer keeps no state
            # (it counts nothing), so framing the chunk here skips several µs
            # of event processing per write and changes nothing h11 relies on.
            payload = b"%x\r\n%b\r\n" % (len(data), data)
        else:
            payload = self._encode(h11.Data(data=data))
        if end:
            payload += self._encode(h11.EndOfMessage())
        await self._write(payload)
        if end:
            self.finished = True

    async def end_stream(self) -> None:
        """Finish a streamed response."""
        await self.send(b"", end=True)

    def abort(self) -> NoReturn:
        """Drop the connection now, leaving any response unfinished."""
        raise AbortConnection

    def _encode(self, event: h11.Response | h11.Data | h11.EndOfMessage) -> bytes:
        return self._conn.send(event)

    async def _write(self, data: bytes) -> None:
        # Fast path: one non-blocking write(2) straight to the socket. trio's
        # send_all would add a scheduler round trip (its checkpoints) and a
        # cancel scope for the timeout to every token of every stream, about a
        # third of the simulator's CPU per token; when the kernel takes all the
        # bytes, which is nearly always, neither is needed. Callers checkpoint
        # on their own (the pacing sleep), so this cannot starve other tasks.
        try:
            sent = os.write(self._fileno, data)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.client_gone = True
            raise ClientGone("the client broke the connection") from exc
        if sent == len(data):
            return
        with trio.move_on_after(self._send_timeout_s):
            try:
                await self._stream.send_all(memoryview(data)[sent:])
            except trio.BrokenResourceError as exc:
                self.client_gone = True
                raise ClientGone("the client broke the connection") from exc
            return
        self.client_gone = True
        raise ClientGone(f"the client read nothing for {self._send_timeout_s} s")
