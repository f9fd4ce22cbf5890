"""A connection's outgoing frames: written at once, or merged and written later.

A request's event becomes its frame and goes to the transport at once
(:class:`Outbox`), which writes it to the socket if the socket takes it.
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

The outbox does not know how frames travel: :class:`FrameTransport` is
chatd's own WebSocket (:mod:`chatd.server.websocket`) and could be another.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from chatd.pipeline import Event, encode, is_terminal
from chatd.pipeline.events import Token
from chatd.ticks import RESOLUTION, sleep_until_tick

__all__ = ["FrameTransport", "Outbox", "Output"]

_PENDING_CHARS = 64 * 1024
"""Merged text an answer may have waiting before its request waits for room."""
_PENDING_TOTAL_CHARS = 2 * _PENDING_CHARS
"""Merged text all of a connection's answers may have waiting before each of
them waits: a client with 64 answers in flight that stops reading holds at
most this much, not 64 times the answer's share."""


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
class Outbox:
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
            seq = self.seqs.get(request_id) if self.seqs else None  # resumable ones only
            self._write(encode(Token(text), request_id, seq))
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
class Output:
    """A request's view of its connection's outbox: its events tagged with its id."""

    id: str
    outbox: Outbox

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
