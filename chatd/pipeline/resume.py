"""Resumable requests: a request that outlives its client's connection for a
grace window, so a client that reconnects hears the rest of it.

A chat sent with ``"resumable": true`` writes its events to a
:class:`Journal` instead of its connection: each event gets the next
sequence number (1, 2, ...), and whoever follows the journal (the first
connection, then whichever resumes it) reads them from its own cursor. The
request never waits on a follower, and a follower that falls behind only
reads later; the journal holds one answer (bounded by
``limits.max_answer_chars``) and its few other events.

When no one follows (the client's connection is gone), the journal's keeper
gives the client ``server.resume_grace_s`` to come back with the request id
and the last sequence number it saw; if it does not, the request is
cancelled, as it would have been without resume. After the request ends,
its journal is kept for the same grace, for a client that lost the end.

The journal's owner is the task group its request runs in (the first
connection's nursery, or the SSE request's): a resumed request's work
stays where it began, and a follower elsewhere only reads.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import structlog
import trio

from chatd.exceptions import ChatdError
from chatd.pipeline.events import Accepted, Event, is_terminal
from chatd.pipeline.resume_redis import POLL_S, mirror, poll_owner

if TYPE_CHECKING:
    from chatd.stores.redis.client import RedisClient

__all__ = ["Followable", "Journal", "Journals"]

log = structlog.get_logger(__name__)


class Followable(Protocol):
    """A resumable request as a follower sees it: here, or on another instance."""

    def follow(self, after: int) -> AsyncGenerator[tuple[int, Event], None]:
        """``(sequence, event)`` after ``after``, to the terminal event."""
        ...

    def cancel(self) -> None:
        """Cancel the request."""
        ...


@attrs.define(eq=False)
class Journal:
    """One resumable request's events, numbered from 1, and its followers."""

    client: str
    scope: trio.CancelScope
    """The request's own scope: cancelling it cancels the request."""
    grace: float
    journals: Journals
    request_id: str | None = None
    """The server-made id, once the request is accepted (then it is findable)."""
    events: list[Event] = attrs.field(factory=list)
    finished: bool = False
    delivered: bool = False
    """A follower has read the terminal event."""
    _follower: object | None = None
    _changed: trio.Event = attrs.field(factory=trio.Event)

    # --- the request's side (a RequestOutput) ---------------------------------

    async def send(self, event: Event) -> None:
        self._append(event)
        await trio.lowlevel.checkpoint_if_cancelled()

    def try_send(self, event: Event) -> bool:
        self._append(event)
        return True

    def send_nowait(self, event: Event) -> None:
        self._append(event)

    def _append(self, event: Event) -> None:
        if isinstance(event, Accepted):
            self.request_id = event.request_id
            self.journals.add(self)
        self.events.append(event)
        if is_terminal(event):
            self.finished = True
        self._change()

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Wait for the next event or change of follower."""
        await self._changed.wait()

    def cancel(self) -> None:
        self.scope.cancel()

    # --- followers ---------------------------------------------------------------

    @property
    def followed(self) -> bool:
        return self._follower is not None

    async def follow(self, after: int) -> AsyncGenerator[tuple[int, Event], None]:
        """``(sequence, event)`` after ``after`` as they come, up to the terminal
        event; it stops early when another follower takes over (the last to
        come wins: that is where the client is now)."""
        me = object()
        self._follower = me
        self._change()
        cursor = max(0, after)
        try:
            while True:
                while cursor < len(self.events) and self._follower is me:
                    event = self.events[cursor]
                    cursor += 1
                    yield cursor, event
                    if is_terminal(event):
                        self.delivered = True
                        self._change()
                        return
                if self._follower is not me:
                    return
                await self._changed.wait()
        finally:
            if self._follower is me:
                self._follower = None
                self._change()

    async def keep(self) -> None:
        """Hold the request to the grace window while no one follows it, and
        keep the journal findable for a grace after it ends; then forget it.
        With Redis, mirror it there, and count a follower on another
        instance (and its cancel) as one here."""
        redis = self.journals.redis
        try:
            async with trio.open_nursery() as nursery:
                if redis is not None:
                    nursery.start_soon(self._mirror, redis)
                await self._hold(redis)
            with trio.move_on_after(self.grace):
                while not self.delivered:
                    await self._changed.wait()
        finally:
            self.journals.remove(self)

    async def _hold(self, redis: RedisClient | None) -> None:
        while not self.finished:
            if self.followed:
                await self._changed.wait()
                continue
            deadline = trio.current_time() + self.grace
            while not (self.followed or self.finished):
                now = trio.current_time()
                if redis is not None and self.request_id is not None:
                    followed, cancelled = await self._poll(redis)
                    if cancelled:
                        self.scope.cancel()
                        return
                    if followed:
                        deadline = now + self.grace
                if now >= deadline:
                    self.scope.cancel()  # nobody came back: cancelled, as without resume
                    return
                until = deadline if redis is None else min(deadline, now + POLL_S)
                with trio.move_on_at(until):
                    await self._changed.wait()

    async def _poll(self, redis: RedisClient) -> tuple[bool, bool]:
        try:
            return await poll_owner(self, redis)
        except ChatdError:  # Redis is down: only followers here count
            return False, False

    async def _mirror(self, redis: RedisClient) -> None:
        while self.request_id is None and not self.finished:
            await self._changed.wait()
        if self.request_id is not None:
            try:
                await mirror(self, redis)
            except ChatdError as exc:  # Redis is down: resumable on this instance only
                log.warning("resumable request not mirrored", error=str(exc))


@attrs.define(eq=False)
class Journals:
    """The process's resumable requests, by request id; with ``redis``,
    mirrored there for other instances."""

    redis: RedisClient | None = None
    _by_id: dict[str, Journal] = attrs.field(factory=dict)

    def add(self, journal: Journal) -> None:
        assert journal.request_id is not None
        self._by_id[journal.request_id] = journal

    def remove(self, journal: Journal) -> None:
        if journal.request_id is not None and self._by_id.get(journal.request_id) is journal:
            del self._by_id[journal.request_id]

    def find(self, request_id: Any, client: str) -> Journal | None:
        """The journal of ``request_id`` if ``client`` may resume it."""
        journal = self._by_id.get(request_id) if isinstance(request_id, str) else None
        return journal if journal is not None and journal.client == client else None

    def __len__(self) -> int:
        return len(self._by_id)
