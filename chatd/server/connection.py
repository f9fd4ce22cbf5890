"""One WebSocket connection: frames in, requests run, events out.

The connection's own task reads frames (always reading, so a disconnect is
seen at once and ``cancel`` is never stuck behind a busy answer) and starts
one task per ``chat`` in the connection's nursery. Nothing waits to write:
a request's event becomes its frame and goes to the transport at once
(:class:`_Outbox`), which writes it to the socket if the socket takes it.
Tokens are merged into fewer frames in two cases:

- within ``server.token_merge_ms`` of the previous frame of the same answer
  (the first token of an answer always goes out at once): the tokens wait,
  merged, until the window ends;
- while the client lags (the socket holds bytes it has not sent): an
  answer's tokens wait, merged, until the socket has taken what it holds.

Either way a task is started to finish the job (a tick-shared sleep, or a
wait for the socket), and ends once nothing waits: an idle connection is its
reader alone, and a steady stream slower than the window runs no task but
its request's. A request whose answer has piled up past its limit, or whose
client has past ``server.send_buffer_bytes`` unsent, waits for room.

The connection does not know how frames travel: :class:`FrameTransport` is
chatd's own WebSocket (:mod:`chatd.server.websocket`) and could be another.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import Any, Protocol, TypeGuard

import attrs
import structlog
import trio

from chatd.exceptions import ChatdError, ClientError, NotFound, Overloaded
from chatd.pipeline import ChatInput, Event, Pipeline, RequestOutput, encode, is_terminal
from chatd.pipeline.events import Pong, Token, error_event
from chatd.pipeline.resume import Followable, Journal
from chatd.pipeline.resume_redis import open_remote
from chatd.server.frames import byte_length, chat_fields, id_from_prefix, json_object
from chatd.ticks import RESOLUTION, sleep_until_tick

__all__ = ["Connection", "FrameTransport"]

log = structlog.get_logger("chatd.server")

_ids = itertools.count(1)

_PENDING_CHARS = 64 * 1024
"""Merged text an answer may have waiting before its request waits for room."""
_PENDING_TOTAL_CHARS = 2 * _PENDING_CHARS
"""Merged text all of a connection's answers may have waiting before each of
them waits: a client with 64 answers in flight that stops reading holds at
most this much, not 64 times the answer's share."""
_CLOSE_WAIT_S = 1.0
_READ_AHEAD = 4
"""Frames are read while the client has fewer than this many send buffers
(``server.send_buffer_bytes``) of replies and events unread."""


class FrameTransport(Protocol):
    """Text frames to and from one client; sending never waits."""

    async def receive(self) -> str | bytes | None:
        """The next frame; ``None`` once the client has gone."""
        ...

    def send_nowait(self, frame: bytes) -> None:
        """Send one text frame (UTF-8), now or as soon as the network takes it."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes sent that the network has not taken yet."""
        ...

    async def drain(self) -> None:
        """Wait until the network has taken everything sent."""
        ...

    def ping(self) -> None:
        """Ask the client for a sign of life (a WebSocket ping)."""
        ...

    @property
    def last_received(self) -> float:
        """When anything last came from the client (trio's clock)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code (bounded)."""
        ...

    def aborted(self) -> None:
        """Drop the connection at once (a client that stopped reading)."""
        ...


@attrs.define(eq=False)
class _Outbox:
    """A connection's outgoing frames: written at once, or merged and flushed later."""

    transport: FrameTransport
    window: float
    limit: int
    """Bytes the transport may hold unsent before requests wait for room."""
    nursery: trio.Nursery
    pending: dict[str, list[str]] = attrs.field(factory=dict)
    """Each answer's token texts waiting for their frame."""
    pending_chars: dict[str, int] = attrs.field(factory=dict)
    pending_total: int = 0
    due: dict[str, float] = attrs.field(factory=dict)
    """When an answer's waiting tokens go out (absent: when the socket drains)."""
    last: dict[str, float] = attrs.field(factory=dict)
    """When each answer's last token frame went out."""
    seqs: dict[str, int] = attrs.field(factory=dict)
    """A resumable request's last event number, sent with its next frame."""
    stalled_since: float | None = None
    """Since when the transport has held bytes it could not send."""
    frames: int = 0
    closed: bool = False
    failed: bool = False
    """The task writing merged and waiting frames raised (a bug): the connection ends."""
    _flushing: bool = False
    _flusher: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _room: trio.Event | None = None
    _hold_within: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # A tick's leeway: a stream that comes in windows already (the LLM
        # client's coalesced reads) wakes on ticks, a little early or late.
        self._hold_within = self.window - min(RESOLUTION, self.window / 4)

    def put(self, request_id: str | None, event: Event, seq: int | None = None) -> None:
        """Send an event of ``request_id``'s (or of the connection's, ``None``);
        ``seq`` numbers a resumable request's events (merged tokens carry the last)."""
        if self.closed:
            return
        if type(event) is Token and request_id is not None:
            if seq is not None:
                self.seqs[request_id] = seq
            self._token(request_id, event.text)
            return
        if request_id is not None:
            if request_id in self.pending:
                self._flush(request_id, trio.current_time())
            if is_terminal(event):
                self.last.pop(request_id, None)
                self.seqs.pop(request_id, None)
        self._write(encode(event, request_id, seq))

    def _token(self, request_id: str, text: str) -> None:
        texts = self.pending.get(request_id)
        if texts is not None:
            texts.append(text)
            self.pending_chars[request_id] += len(text)
            self.pending_total += len(text)
            return
        now = trio.current_time()
        last = self.last.get(request_id)
        if self.transport.buffered:  # lagging: merge until the socket drains
            self._hold(request_id, text)
        elif last is not None and now - last < self._hold_within:
            self._hold(request_id, text)
            self.due[request_id] = last + self.window
        else:
            self.last[request_id] = now
            self._write(encode(Token(text), request_id, self.seqs.get(request_id)))
            return
        self._start_flushing()

    def _hold(self, request_id: str, text: str) -> None:
        self.pending[request_id] = [text]
        self.pending_chars[request_id] = len(text)
        self.pending_total += len(text)

    def _flush(self, request_id: str, now: float) -> None:
        texts = self.pending.pop(request_id)
        self.pending_total -= self.pending_chars.pop(request_id)
        self.due.pop(request_id, None)
        self.last[request_id] = now
        self._write(encode(Token("".join(texts)), request_id, self.seqs.get(request_id)))

    def _write(self, frame: bytes) -> None:
        self.transport.send_nowait(frame)
        self.frames += 1
        if self.transport.buffered and self.stalled_since is None:
            self.stalled_since = trio.current_time()
            self._start_flushing()

    def _start_flushing(self) -> None:
        if not self._flushing and not self.closed:
            self._flushing = True
            self.nursery.start_soon(self._flush_until_done)

    async def _flush_until_done(self) -> None:
        """Drain the socket and flush merged tokens as they fall due, then end
        (or stop where it is when the connection closes)."""
        try:
            with self._flusher:
                await self._flush_while_needed()
        except Exception:
            self.failed = True
            raise
        finally:
            self._flushing = False
            self._flusher = trio.CancelScope()
            self._wake()

    async def _flush_while_needed(self) -> None:
        while not self.closed:
            now = trio.current_time()
            if self.transport.buffered:
                await self.transport.drain()
                self.stalled_since = None
                now = trio.current_time()
                for request_id in list(self.pending):  # all that piled up meanwhile
                    self._flush(request_id, now)
                self._wake()
            elif self.due:
                when = min(self.due.values())
                if when > now:
                    await sleep_until_tick(when)
                    now = trio.current_time()
                for request_id, at in list(self.due.items()):
                    if at <= now:
                        self._flush(request_id, now)
                self._wake()
            else:
                break

    def crowded(self, request_id: str) -> bool:
        """True if ``request_id`` should wait before sending more."""
        return (
            self.transport.buffered > self.limit
            or self.pending_total > _PENDING_TOTAL_CHARS
            or self.pending_chars.get(request_id, 0) > _PENDING_CHARS
        )

    async def room(self, request_id: str) -> None:
        """Wait until ``request_id`` may send again."""
        while self.crowded(request_id) and not self.closed:
            await self._wait_for_room()

    async def until_taken_below(self, size: int) -> None:
        """Wait until the transport holds at most ``size`` bytes unsent."""
        while self.transport.buffered > size and not self.closed:
            self._start_flushing()  # (running already, as bytes wait)
            await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        if self._room is None:
            self._room = trio.Event()
        await self._room.wait()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def close(self) -> None:
        """The client is gone: nothing more is written, and no one waits for room."""
        self.closed = True
        self.pending.clear()
        self.pending_chars.clear()
        self.pending_total = 0
        self.due.clear()
        self.stalled_since = None
        self._flusher.cancel()  # it may wait on a socket nobody reads
        self._wake()

    async def flush_all(self) -> None:
        """Send everything waiting and let the socket take it (a drain's last step)."""
        now = trio.current_time()
        for request_id in list(self.pending):
            self._flush(request_id, now)
        await self.transport.drain()


@attrs.frozen
class _Output:
    """A request's view of its connection's outbox: its events tagged with its id."""

    id: str
    outbox: _Outbox

    async def send(self, event: Event) -> None:
        """Send now; wait afterwards if the client has fallen far behind."""
        self.outbox.put(self.id, event)
        if self.outbox.crowded(self.id):
            await self.outbox.room(self.id)

    def try_send(self, event: Event) -> bool:
        """Send if that needs no waiting; ``False`` (nothing sent) if it would wait."""
        if self.outbox.crowded(self.id):
            return False
        self.outbox.put(self.id, event)
        return True

    def send_nowait(self, event: Event) -> None:
        """Advisory events (queue positions): a lagging client skips them."""
        self.try_send(event)


def _valid_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()


@attrs.define(eq=False)
class _Following:
    """A resumable request this connection relays (its source found, or being found)."""

    source: Followable | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancelled: bool = False

    def cancel(self) -> None:
        """The client's cancel: of the request itself, wherever it runs."""
        self.cancelled = True
        if self.source is not None:
            self.source.cancel()


@attrs.define(eq=False)
class Connection:
    """Serves one client's frames until it goes away."""

    pipeline: Pipeline
    client: str
    id: str = attrs.field(factory=lambda: f"conn_{next(_ids)}")
    draining: trio.Event = attrs.field(factory=trio.Event)
    """Set when the server drains, which also calls :meth:`drain`."""
    last_activity: float = attrs.field(factory=trio.current_time, init=False)
    """When a frame last came in or went out (for the idle reaper)."""
    reaped: str | None = attrs.field(default=None, init=False)
    _requests: dict[str, trio.CancelScope] = attrs.field(factory=dict, init=False)
    _resumable: set[str] = attrs.field(factory=set, init=False)
    """Requests of ours sent as resumable: they outlive this connection for a grace."""
    _following: dict[str, _Following] = attrs.field(factory=dict, init=False)
    """Resumable requests whose events this connection relays, by the client's id."""
    _reader: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _idle: trio.Event = attrs.field(factory=trio.Event, init=False)
    _out: _Outbox | None = attrs.field(default=None, init=False)
    _scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _transport: FrameTransport | None = attrs.field(default=None, init=False)
    _drain_started: bool = attrs.field(default=False, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _pinged_at: float | None = attrs.field(default=None, init=False)
    _frames_counted: int = attrs.field(default=0, init=False)

    @property
    def send_started(self) -> float | None:
        """Since when the client has left bytes unread; ``None`` while it keeps up."""
        return self._out.stalled_since if self._out is not None else None

    def reap(self, reason: str) -> None:
        """Drop the connection now (the janitor calls this); its requests stop
        (resumable ones wait for their client to come back elsewhere)."""
        self.reaped = reason
        self._reader.cancel()

    @property
    def writer_failed(self) -> bool:
        """The connection ended because its writer task raised."""
        return self._out is not None and self._out.failed

    @property
    def in_flight(self) -> int:
        """Requests under way on this connection, its own and those it relays."""
        return len(self._requests.keys() | self._following.keys())

    def keep_alive(self, now: float, interval: float) -> str | None:
        """Ping a client silent for ``interval``; a reason to drop it if it stayed
        silent through a whole interval after a ping (a half-open connection)."""
        transport = self._transport
        if transport is None:
            return None
        if transport.last_received >= (self._pinged_at or -1.0):
            self._pinged_at = None  # it answered, or spoke since
        if self._pinged_at is not None:
            return "no answer to pings" if now - self._pinged_at > interval else None
        if now - transport.last_received >= interval:
            self._pinged_at = now
            transport.ping()
        return None

    def count_frames(self) -> None:
        """Add the frames sent since the last call to the metric (done by the
        janitor's sweep and at the end, not per frame)."""
        if self._out is not None:
            total = self._out.frames
            self.pipeline.metrics.frames_sent(total - self._frames_counted)
            self._frames_counted = total

    async def serve(self, transport: FrameTransport) -> None:
        """Read, run and write until the client goes (or the connection is dropped)."""
        self._idle.set()
        self._transport = transport
        settings = self.pipeline.settings.server
        try:
            async with trio.open_nursery() as nursery:
                self._scope, self._nursery = nursery.cancel_scope, nursery
                self._out = _Outbox(
                    transport, settings.token_merge_ms / 1000, settings.send_buffer_bytes, nursery
                )
                if self.draining.is_set():  # began before we were here to be told
                    self.drain()
                with self._reader:
                    while True:
                        # A client sending faster than it reads is read no further
                        # until it reads: its replies stay bounded, and nothing it
                        # was promised is dropped (one that never reads is reaped).
                        await self._out.until_taken_below(_READ_AHEAD * self._out.limit)
                        frame = await transport.receive()
                        if frame is None:
                            break
                        self.last_activity = trio.current_time()
                        self._handle(frame, nursery)
                self._gone()
        finally:
            self._nursery = None  # closed to new tasks: drain() now does nothing
            if self._out is not None:
                self._out.closed = True
            self.count_frames()

    def _gone(self) -> None:
        """The client went (or was dropped): its requests are cancelled, but
        resumable ones, which only lose their follower here; nothing more is written."""
        for request_id, scope in self._requests.items():
            if request_id not in self._resumable:
                scope.cancel()
        for following in self._following.values():
            following.scope.cancel()
        if self._out is not None:
            self._out.close()

    def drain(self) -> None:
        """The server drains: close (1001) once no request is in flight. The
        task that waits for that starts now, not with every connection."""
        if self._nursery is not None and not self._drain_started:
            self._drain_started = True
            self._nursery.start_soon(self._stop_when_drained)

    async def _stop_when_drained(self) -> None:
        """Once idle, let everything waiting go out, then end."""
        await self._idle.wait()
        assert self._scope is not None and self._out is not None
        self._closing = True
        with trio.move_on_after(_CLOSE_WAIT_S):
            await self._out.flush_all()
        self._scope.cancel()

    def _reply(self, request_id: str | None, event: Event) -> None:
        """A reply to a frame itself (pong, refusals), sent without waiting: the
        reader bounds them, reading no more frames while replies pile up."""
        out = self._out
        if out is None or self._closing:
            return  # closing: the client hears 1001 instead
        out.put(request_id, event)

    def _handle(self, raw: str | bytes, nursery: trio.Nursery) -> None:
        limits = self.pipeline.settings.limits
        request_id: str | None = None
        try:
            if isinstance(raw, bytes):
                raise ClientError("frames must be text (JSON), not binary")
            if byte_length(raw) > limits.max_frame_bytes:  # too_large, but for which request?
                candidate = id_from_prefix(raw)
                if _valid_id(candidate):
                    request_id = candidate
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
                following = self._following.get(request_id)
                if scope is not None:
                    scope.cancel()
                elif following is not None:
                    following.cancel()
            elif kind == "resume":
                self._resume(frame, request_id, nursery)
            elif kind == "ping":
                self._reply(request_id, Pong())
            elif kind is None:
                raise ClientError("frame has no 'type'")
            else:
                raise ClientError(f"unknown frame type {kind!r}")
        except ChatdError as exc:
            log.info("frame refused", code=exc.code, error=exc.message, id=request_id)
            self._reply(request_id, error_event(exc))

    def _chat(
        self, frame: Mapping[str, Any], request_id: str | None, nursery: trio.Nursery
    ) -> None:
        self._check_new_id(request_id)
        assert request_id is not None
        message, session, metadata = chat_fields(frame)
        resumable = frame.get("resumable", False)
        if not isinstance(resumable, bool):
            raise ClientError("'resumable' must be true or false")
        grace = self.pipeline.settings.server.resume_grace_s
        if self._closing:
            return  # the connection is closing for a drain: the client hears 1001
        limit = self.pipeline.settings.limits.max_requests_per_connection
        if len(self._requests) >= limit:
            raise Overloaded(f"{limit} requests already in flight on this connection")
        assert self._out is not None
        chat = ChatInput(request_id, message, session, metadata, self.client, self.id)
        if not self._requests:
            self._idle = trio.Event()
        scope = self._requests[request_id] = trio.CancelScope()
        if not (resumable and grace > 0):
            nursery.start_soon(self._run, chat, scope, _Output(request_id, self._out))
            return
        journal = Journal(self.client, scope, grace, self.pipeline.journals)
        self._resumable.add(request_id)
        nursery.start_soon(self._run, chat, scope, journal)
        nursery.start_soon(journal.keep)
        self._follow_soon(request_id, journal, 0, nursery)

    def _check_new_id(self, request_id: str | None) -> None:
        if request_id is None:
            raise ClientError("'id' must be a string of 1 to 128 printable characters")
        if request_id in self._requests or request_id in self._following:
            raise ClientError(f"a request with id {request_id!r} is already in flight")

    def _resume(
        self, frame: Mapping[str, Any], request_id: str | None, nursery: trio.Nursery
    ) -> None:
        """Relay a resumable request's events after ``after`` here, as ``request_id``."""
        self._check_new_id(request_id)
        assert request_id is not None
        after = frame.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ClientError("'after' must be a whole number of 0 or more")
        wanted = frame.get("request_id")
        journal = self.pipeline.journals.find(wanted, self.client)
        if journal is None and self.pipeline.journals.redis is None:
            raise self._not_found(wanted)
        if not self._closing:  # (not here: perhaps on another instance, through Redis)
            self._follow_soon(request_id, journal, after, nursery, wanted)

    def _not_found(self, wanted: object) -> NotFound:
        grace = self.pipeline.settings.server.resume_grace_s
        return NotFound(
            f"no request {wanted!r} to resume: it was not sent as resumable by this "
            f"client, or ended more than {grace:g} s ago"
        )

    def _follow_soon(
        self,
        request_id: str,
        source: Followable | None,
        after: int,
        nursery: trio.Nursery,
        wanted: object = None,
    ) -> None:
        following = self._following[request_id] = _Following(source)
        nursery.start_soon(self._follow, request_id, following, after, wanted)

    async def _follow(
        self, request_id: str, following: _Following, after: int, wanted: object
    ) -> None:
        """Write a resumable request's events from ``after`` on, numbered, until
        its end, this connection's end, or the client resuming it elsewhere."""
        out = self._out
        assert out is not None
        try:
            with following.scope:
                if following.source is None:  # on another instance, or nowhere
                    redis = self.pipeline.journals.redis
                    assert redis is not None
                    try:
                        following.source = await open_remote(redis, wanted, self.client)
                    except ChatdError as exc:
                        out.put(request_id, error_event(exc))
                        return
                    if following.source is None:
                        out.put(request_id, error_event(self._not_found(wanted)))
                        return
                    if following.cancelled:
                        following.source.cancel()
                async with contextlib.aclosing(following.source.follow(after)) as events:
                    async for seq, event in events:
                        out.put(request_id, event, seq)
                        if out.crowded(request_id):
                            await out.room(request_id)
        finally:
            if self._following.get(request_id) is following:
                del self._following[request_id]
            self.last_activity = trio.current_time()

    async def _run(self, chat: ChatInput, scope: trio.CancelScope, out: RequestOutput) -> None:
        try:
            await self.pipeline.run(chat, out, scope)
        finally:
            self.last_activity = trio.current_time()
            del self._requests[chat.id]
            self._resumable.discard(chat.id)
            if not self._requests:
                self._idle.set()
