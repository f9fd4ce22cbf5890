"""One WebSocket connection: frames in, requests run, events out.

The connection's own task reads frames (always reading, so a disconnect is
seen at once and ``cancel`` is never stuck behind a busy answer) and starts
one task per ``chat`` in the connection's nursery. Nothing waits to write:
events go out through the connection's :class:`~chatd.server.outbox.Outbox`.
A resumable request's events go to its journal instead, and the connection
relays them (:mod:`chatd.pipeline.resume`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import Any, TypeGuard

import attrs
import structlog
import trio

from chatd.exceptions import ChatdError, ClientError, NotFound, Overloaded
from chatd.pipeline import ChatInput, Event, Pipeline, RequestOutput
from chatd.pipeline.events import Pong, error_event
from chatd.pipeline.resume import Followable, Journal
from chatd.pipeline.resume_redis import open_remote
from chatd.server.frames import byte_length, chat_fields, id_from_prefix, json_object
from chatd.server.outbox import FrameTransport, Outbox, Output

__all__ = ["Connection", "FrameTransport"]

log = structlog.get_logger("chatd.server")

_ids = itertools.count(1)

_CLOSE_WAIT_S = 1.0
_READ_AHEAD = 4
"""Frames are read while the client has fewer than this many send buffers
(``server.send_buffer_bytes``) of replies and events unread."""


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
    _out: Outbox | None = attrs.field(default=None, init=False)
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
                self._out = Outbox(
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
                self._gone(nursery)
        finally:
            self._nursery = None  # closed to new tasks: drain() now does nothing
            if self._out is not None:
                self._out.closed = True
            self.count_frames()

    def _gone(self, nursery: trio.Nursery) -> None:
        """The client went (or was dropped): nothing more is written, and its
        requests are cancelled, but resumable ones, which only lose their
        follower here. With none of those, everything in the connection's
        nursery ends at once, as it always did."""
        if self._out is not None:
            self._out.close()
        if not self._resumable:
            nursery.cancel_scope.cancel()
            return
        for request_id, scope in self._requests.items():
            if request_id not in self._resumable:
                scope.cancel()
        for following in self._following.values():
            following.scope.cancel()

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
            nursery.start_soon(self._run, chat, scope, Output(request_id, self._out))
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
