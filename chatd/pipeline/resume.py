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
from typing import Any

import attrs
import trio

from chatd.pipeline.events import Accepted, Event, is_terminal

__all__ = ["Journal", "Journals"]


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
        keep the journal findable for a grace after it ends; then forget it."""
        try:
            while not self.finished:
                if self.followed:
                    await self._changed.wait()
                    continue
                with trio.move_on_after(self.grace):
                    while not (self.followed or self.finished):
                        await self._changed.wait()
                if not (self.followed or self.finished):
                    self.scope.cancel()  # nobody came back: cancelled, as without resume
                    return
            with trio.move_on_after(self.grace):
                while not self.delivered:
                    await self._changed.wait()
        finally:
            self.journals.remove(self)


@attrs.define(eq=False)
class Journals:
    """The process's resumable requests, by request id."""

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
