"""The answer cache: finished, shareable answers, replayed to identical questions.

:class:`AnswerCache` is the interface; :class:`MemoryAnswerCache` keeps
entries in this process with a time to live and a bound on their number (the
least recently used go first); :class:`~chatd.stores.redis.stores.RedisAnswerCache`
keeps them in Redis for every instance. What an entry
holds is opaque here: the pipeline stores the events it will replay.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

import attrs
import trio

__all__ = ["AnswerCache", "CacheStatistics", "Expiring", "MemoryAnswerCache"]

T = TypeVar("T")


class AnswerCache(Protocol[T]):
    """Where finished answers wait for the next identical question."""

    async def get(self, key: str) -> T | None:
        """The entry under ``key`` if it has not expired."""
        ...

    async def put(self, key: str, value: T) -> None:
        """Keep ``value`` under ``key`` for the configured time."""
        ...

    def statistics(self) -> CacheStatistics:
        """Entries held, and how lookups went."""
        ...


@runtime_checkable
class Expiring(Protocol):
    """A store that drops what has expired only when asked (one in memory):
    the janitor asks it every interval. Stores in Redis let Redis expire."""

    def expire(self) -> int:
        """Drop what has expired; how many went."""
        ...


@attrs.frozen
class CacheStatistics:
    """Entries held, and how lookups went."""

    entries: int
    hits: int
    misses: int
    expired: int


def _one(_value: object) -> int:
    return 1


@attrs.define
class MemoryAnswerCache(Generic[T]):
    """Entries in this process, each for ``ttl_s``, at most ``max_entries`` and
    ``max_bytes`` (as ``size`` tells an entry's; by default there is no byte
    bound worth the name)."""

    ttl_s: float
    max_entries: int
    max_bytes: int = 1 << 62
    size: Callable[[T], int] = _one
    _entries: collections.OrderedDict[str, tuple[float, T, int]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )
    _bytes: int = attrs.field(default=0, init=False)
    _hits: int = attrs.field(default=0, init=False)
    _misses: int = attrs.field(default=0, init=False)
    _expired: int = attrs.field(default=0, init=False)

    async def get(self, key: str) -> T | None:
        """See :meth:`AnswerCache.get`."""
        await trio.lowlevel.checkpoint_if_cancelled()  # nothing waits: no schedule point
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= trio.current_time():
            self._drop(key)
            self._expired += 1
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        self._entries.move_to_end(key)
        return entry[1]

    async def put(self, key: str, value: T) -> None:
        """See :meth:`AnswerCache.put`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        size = self.size(value)
        if size > self.max_bytes:
            return  # it would push out everything else
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (trio.current_time() + self.ttl_s, value, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))  # the least recently used

    def _drop(self, key: str) -> None:
        self._bytes -= self._entries.pop(key)[2]

    def expire(self) -> int:
        """Drop expired entries (the janitor calls this); returns how many."""
        now = trio.current_time()
        stale = [key for key, (until, _v, _s) in self._entries.items() if until <= now]
        for key in stale:
            self._drop(key)
        self._expired += len(stale)
        return len(stale)

    def statistics(self) -> CacheStatistics:
        """Entries held, hits, misses, expiries."""
        return CacheStatistics(len(self._entries), self._hits, self._misses, self._expired)
