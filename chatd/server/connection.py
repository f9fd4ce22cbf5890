"""One WebSocket connection: frames in, requests run, events out.

Three kinds of task share the connection's nursery: the reader (always
reading, so a disconnect is seen at once and ``cancel`` is never stuck
behind a busy answer), one task per ``chat``, and the writer. Requests hand
their events to the writer through one bounded channel; the writer merges an
answer's tokens into fewer frames, both when the client lags (everything
already queued goes out together) and within ``server.token_merge_ms`` of an
answer's previous token frame (the first token always goes out at once).
The writer and its channel start with the first frame to send, and the task
that waits for a drain with the drain: an idle connection is its reader
alone, since thousands of idle connections multiply every task and channel.
A token of an answer whose merged frame is already waiting for its window,
with nothing else of that answer still queued, joins that frame directly
(:class:`_Merge`): no trip through the channel, no waking the writer.

The connection does not know how frames travel: :class:`FrameTransport` is
hypercorn's ASGI messages today (quart-trio's websocket where quart serves
the socket) and could be any other.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import structlog
import trio

from chatd.exceptions import ChatdError, ClientError, Overloaded, Unauthorized
from chatd.pipeline import ChatInput, Event, Pipeline, encode, is_terminal
from chatd.pipeline.events import Pong, Token, error_event
from chatd.server.frames import chat_fields, json_object

__all__ = ["Connection", "FrameTransport"]

log = structlog.get_logger("chatd.server")

Outgoing = tuple[str | None, Event]
_ids = itertools.count(1)


class FrameTransport(Protocol):
    """Text frames to and from one client."""

    async def receive(self) -> str | bytes:
        """The next frame; a closed connection cancels the caller instead."""
        ...

    async def send(self, frame: str) -> None:
        """Send one text frame."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""
        ...


_MERGE_CAP = 256
"""Texts a waiting frame takes directly; past that, tokens queue (and wait) as usual."""


@attrs.define
class _Merge:
    """What the writer and the requests share to merge tokens at the source.

    ``pending`` holds each answer's token texts waiting for its window (the
    writer's); ``queued`` counts each request's items in the channel that the
    writer has not taken yet. A token may join ``pending`` directly only when
    none of its request's items is queued: it can overtake nothing.
    """

    pending: dict[str, list[str]] = attrs.field(factory=dict)
    queued: collections.Counter[str] = attrs.field(factory=collections.Counter)

    def join(self, request_id: str, event: Event) -> bool:
        """Add a token to its answer's waiting frame, if it may; ``True`` if it did."""
        if type(event) is not Token or self.queued[request_id]:
            return False
        texts = self.pending.get(request_id)
        if texts is None or len(texts) >= _MERGE_CAP:
            return False
        texts.append(event.text)
        return True

    def taken(self, request_id: str | None) -> None:
        """The writer took one of ``request_id``'s items off the channel."""
        if request_id is not None and self.queued[request_id] > 0:
            self.queued[request_id] -= 1
            if not self.queued[request_id]:
                del self.queued[request_id]

    def withdrawn(self, request_id: str | None) -> None:
        """An item counted as queued never went in (the send was cancelled or refused)."""
        self.taken(request_id)

    def put_nowait(
        self, channel: trio.MemorySendChannel[Outgoing], request_id: str | None, event: Event
    ) -> None:
        """Queue an item without waiting, counted; raises as ``send_nowait`` does,
        with nothing counted."""
        if request_id is not None:
            self.queued[request_id] += 1
        try:
            channel.send_nowait((request_id, event))
        except BaseException:
            self.withdrawn(request_id)
            raise


@attrs.frozen
class _Output:
    """A request's view of the writer: its events tagged with its id."""

    id: str
    channel: trio.MemorySendChannel[Outgoing]
    merge: _Merge

    async def send(self, event: Event) -> None:
        if self.merge.join(self.id, event):
            return
        self.merge.queued[self.id] += 1
        try:
            await self.channel.send((self.id, event))
        except BaseException:
            self.merge.withdrawn(self.id)
            raise

    def try_send(self, event: Event) -> bool:
        """Send without waiting if there is room; ``False`` (nothing sent) if not."""
        if self.merge.join(self.id, event):
            return True
        try:
            self.merge.put_nowait(self.channel, self.id, event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def send_nowait(self, event: Event) -> None:
        # Advisory only (queue positions): a lagging client skips one.
        with contextlib.suppress(trio.WouldBlock):
            self.merge.put_nowait(self.channel, self.id, event)


async def _next(receive: trio.MemoryReceiveChannel[Outgoing]) -> Outgoing | None:
    """The next item, or ``None`` at the end of the channel."""
    try:
        return await receive.receive()
    except trio.EndOfChannel:
        return None


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()


@attrs.define(eq=False)
class Connection:
    """Serves one client's frames until it goes away."""

    pipeline: Pipeline
    client: str
    authorized: bool = True
    id: str = attrs.field(factory=lambda: f"conn_{next(_ids)}")
    draining: trio.Event = attrs.field(factory=trio.Event)
    """Set when the server drains, which also calls :meth:`drain`."""
    last_activity: float = attrs.field(factory=trio.current_time, init=False)
    """When a frame last came in or went out (for the idle reaper)."""
    send_started: float | None = attrs.field(default=None, init=False)
    """When the send under way began; ``None`` when none is (for the stall reaper)."""
    reaped: str | None = attrs.field(default=None, init=False)
    _requests: dict[str, trio.CancelScope] = attrs.field(factory=dict, init=False)
    _idle: trio.Event = attrs.field(factory=trio.Event, init=False)
    _out: trio.MemorySendChannel[Outgoing] | None = attrs.field(default=None, init=False)
    _merge: _Merge = attrs.field(factory=_Merge, init=False)
    _out_closed: bool = attrs.field(default=False, init=False)
    _writer_done: trio.Event = attrs.field(factory=trio.Event, init=False)
    _scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _transport: FrameTransport | None = attrs.field(default=None, init=False)
    _drain_started: bool = attrs.field(default=False, init=False)

    def reap(self, reason: str) -> None:
        """Drop the connection now (the janitor calls this); its requests stop."""
        self.reaped = reason
        if self._scope is not None:
            self._scope.cancel()

    @property
    def in_flight(self) -> int:
        """Requests under way on this connection."""
        return len(self._requests)

    async def serve(self, transport: FrameTransport) -> None:
        """Read, run and write until the transport closes (which cancels us)."""
        self._idle.set()
        self._transport = transport
        try:
            async with trio.open_nursery() as nursery:
                self._scope, self._nursery = nursery.cancel_scope, nursery
                if self.draining.is_set():  # began before we were here to be told
                    self.drain()
                while True:
                    frame = await transport.receive()
                    self.last_activity = trio.current_time()
                    self._handle(frame, nursery)
        finally:
            self._nursery = None  # closed to new tasks: drain() now does nothing
        if (
            self.draining.is_set() and self.reaped is None
        ):  # the writer is gone, so nothing is sent after the close
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                await transport.close(1001, "server shutting down")

    def drain(self) -> None:
        """The server drains: close (1001) once no request is in flight. The
        task that waits for that starts now, not with every connection."""
        if self._nursery is not None and not self._drain_started:
            self._drain_started = True
            self._nursery.start_soon(self._stop_when_drained)

    def _writer(self) -> trio.MemorySendChannel[Outgoing]:
        """The writer's channel; the first call opens it and starts the writer."""
        if self._out is None:
            assert self._nursery is not None and self._transport is not None
            settings = self.pipeline.settings.server
            send, receive = trio.open_memory_channel[Outgoing](settings.send_queue)
            self._out = send
            window = settings.token_merge_ms / 1000
            self._nursery.start_soon(self._write, receive, self._transport, window)
        return self._out

    async def _stop_when_drained(self) -> None:
        """Once idle, let the writer (if any) send everything, then end."""
        await self._idle.wait()
        assert self._scope is not None
        self._out_closed = True
        if self._out is not None:
            await self._out.aclose()  # the writer ends once every request's clone is closed too
            with trio.move_on_after(1.0):
                await self._writer_done.wait()
        self._scope.cancel()

    def _reply(self, request_id: str | None, event: Event, nursery: trio.Nursery) -> None:
        """A reply to a frame itself (pong, refusals), queued without waiting so
        the reader never blocks. A client whose queue is full is not reading:
        it is dropped rather than given an unbounded pile of replies."""
        if self._writer_done.is_set() or self._out_closed:
            return  # closing: the client hears 1001 instead
        try:
            self._merge.put_nowait(self._writer(), request_id, event)
        except trio.WouldBlock:
            log.warning("client not reading its replies: dropping it", connection=self.id)
            self.reap("client stopped reading")

    def _handle(self, raw: str | bytes, nursery: trio.Nursery) -> None:
        limits = self.pipeline.settings.limits
        request_id: str | None = None
        try:
            if isinstance(raw, bytes):
                raise ClientError("frames must be text (JSON), not binary")
            frame = json_object(raw, "frame", limits.max_frame_bytes)
            if _valid_id(frame.get("id")):
                request_id = frame["id"]
            kind = frame.get("type")
            if kind == "chat":
                self._chat(frame, request_id, nursery)
            elif kind == "cancel":
                if request_id is None:
                    raise ClientError("'cancel' needs the 'id' of a request")
                scope = self._requests.get(request_id)
                if scope is not None:
                    scope.cancel()
            elif kind == "ping":
                self._reply(request_id, Pong(), nursery)
            elif kind is None:
                raise ClientError("frame has no 'type'")
            else:
                raise ClientError(f"unknown frame type {kind!r}")
        except ChatdError as exc:
            self._reply(request_id, error_event(exc), nursery)

    def _chat(
        self, frame: Mapping[str, Any], request_id: str | None, nursery: trio.Nursery
    ) -> None:
        if request_id is None:
            raise ClientError("'id' must be a string of 1 to 128 printable characters")
        if request_id in self._requests:
            raise ClientError(f"a request with id {request_id!r} is already in flight")
        message, session, metadata = chat_fields(frame)
        if self._out_closed:
            return  # the connection is closing for a drain: the client hears 1001
        if not self.authorized:
            raise Unauthorized("missing or wrong API key")
        limit = self.pipeline.settings.limits.max_requests_per_connection
        if len(self._requests) >= limit:
            raise Overloaded(f"{limit} requests already in flight on this connection")
        chat = ChatInput(request_id, message, session, metadata, self.client)
        if not self._requests:
            self._idle = trio.Event()
        scope = self._requests[request_id] = trio.CancelScope()
        nursery.start_soon(
            self._run, chat, scope, _Output(request_id, self._writer().clone(), self._merge)
        )

    async def _run(self, chat: ChatInput, scope: trio.CancelScope, out: _Output) -> None:
        try:
            async with out.channel:
                await self.pipeline.run(chat, out, scope)
        finally:
            del self._requests[chat.id]
            if not self._requests:
                self._idle.set()

    async def _write(
        self, receive: trio.MemoryReceiveChannel[Outgoing], transport: FrameTransport, window: float
    ) -> None:
        """Send events in order per request, merging each answer's tokens."""
        merge = self._merge
        pending = merge.pending  # request id -> token texts not yet sent
        due: dict[str, float] = {}  # request id -> when its pending tokens go out
        last: dict[str, float] = {}  # request id -> when its last token frame went out
        ended = False
        async with receive:
            while not ended:
                batch: list[Outgoing] = []
                item: Outgoing | None = None
                if due:
                    with trio.move_on_at(min(due.values())) as waiting:
                        item = await _next(receive)
                    closed = item is None and not waiting.cancelled_caught
                else:  # no scope to make when nothing waits on a window
                    item = await _next(receive)
                    closed = item is None
                if closed:  # closing: send what is pending, then stop
                    ended = True
                    due = dict.fromkeys(due, -math.inf)
                elif item is not None:
                    batch.append(item)
                while not ended:  # whatever else is queued goes out with it
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        ended = True
                        due = dict.fromkeys(due, -math.inf)
                now = trio.current_time()
                frames: list[bytes] = []
                for request_id, event in batch:
                    merge.taken(request_id)
                    if type(event) is Token and request_id is not None:
                        if request_id not in pending:
                            pending[request_id] = []
                            due[request_id] = max(now, last.get(request_id, -math.inf) + window)
                        pending[request_id].append(event.text)
                        continue
                    if request_id in pending:
                        frames.append(self._flush(request_id, pending, due, last, now))
                    if is_terminal(event) and request_id is not None:
                        last.pop(request_id, None)
                    frames.append(encode(event, request_id))
                for request_id in [r for r, t in due.items() if t <= now]:
                    frames.append(self._flush(request_id, pending, due, last, now))
                for frame in frames:
                    self.send_started = trio.current_time()
                    await transport.send(frame.decode())
                    self.send_started = None
                if frames:
                    self.last_activity = trio.current_time()
                    self.pipeline.metrics.frames_sent(len(frames))
        self._writer_done.set()

    @staticmethod
    def _flush(
        request_id: str,
        pending: dict[str, list[str]],
        due: dict[str, float],
        last: dict[str, float],
        now: float,
    ) -> bytes:
        texts = pending.pop(request_id)
        del due[request_id]
        last[request_id] = now
        return encode(Token("".join(texts)), request_id)
