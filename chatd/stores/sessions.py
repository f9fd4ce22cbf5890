"""Session history: the earlier turns of a conversation.

:class:`SessionStore` is the interface; :class:`MemorySessionStore` the
embedded implementation (:class:`~chatd.stores.redis.stores.RedisSessionStore` its
sibling). A turn is stored
only when it completes, as the user's message and the assistant's answer.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from chatd.llm.types import Message

__all__ = ["MemorySessionStore", "SessionStore", "SessionStoreStatistics"]


class SessionStore(Protocol):
    """Where conversations live between requests."""

    async def history(self, session: str) -> list[Message]:
        """The session's earlier messages, oldest first ([] if unknown)."""
        ...

    async def append(self, session: str, messages: Sequence[Message]) -> None:
        """Add a completed turn's messages."""
        ...


@attrs.frozen
class SessionStoreStatistics:
    """How many sessions are held."""

    sessions: int


@attrs.define
class MemorySessionStore:
    """Sessions in this process: at most ``max_messages`` per session, the
    least recently used sessions dropped beyond ``max_sessions``, and any
    untouched for ``ttl_s`` expired by :meth:`expire` (the janitor calls it)."""

    max_sessions: int = 10_000
    max_messages: int = 50
    ttl_s: float = 3600.0
    _sessions: collections.OrderedDict[str, tuple[float, list[Message]]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    async def history(self, session: str) -> list[Message]:
        """See :meth:`SessionStore.history`."""
        entry = self._sessions.get(session)
        if entry is None:
            return []
        self._sessions.move_to_end(session)
        return list(entry[1])

    async def append(self, session: str, messages: Sequence[Message]) -> None:
        """See :meth:`SessionStore.append`."""
        _touched, stored = self._sessions.pop(session, (0.0, []))
        stored = [*stored, *messages][-self.max_messages :]
        self._sessions[session] = (trio.current_time(), stored)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def expire(self) -> int:
        """Drop sessions untouched for ``ttl_s``; returns how many."""
        cutoff = trio.current_time() - self.ttl_s
        stale = [key for key, (touched, _m) in self._sessions.items() if touched < cutoff]
        for key in stale:
            del self._sessions[key]
        return len(stale)

    def statistics(self) -> SessionStoreStatistics:
        """How many sessions are held."""
        return SessionStoreStatistics(len(self._sessions))
