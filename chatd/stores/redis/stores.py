"""The answer cache and session history in Redis, shared by every chatd instance.

Siblings of :class:`~chatd.stores.cache.MemoryAnswerCache` and
:class:`~chatd.stores.sessions.MemorySessionStore`, run through the same
contract tests. Each operation is one :meth:`RedisClient.call`, so one thread
hop: what belongs together goes in one pipeline. Redis expires keys itself
(no janitor), and bounds its memory with its own ``maxmemory-policy`` where
the memory stores bound their entries.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

import attrs
import orjson
import redis
import structlog
import trio

from chatd.llm.types import Message
from chatd.stores.cache import CacheStatistics
from chatd.stores.redis.client import RedisClient

log = structlog.get_logger("chatd.stores")

__all__ = ["RedisAnswerCache", "RedisSessionStore"]

T = TypeVar("T")


def _ms(seconds: float) -> int:
    """A Redis expiry in milliseconds (PX and PEXPIRE take at least 1)."""
    return max(1, math.ceil(seconds * 1000))


def _get(r: redis.Redis, key: str) -> bytes | None:
    return cast("bytes | None", r.get(key))


def _set(r: redis.Redis, key: str, value: bytes, ttl_ms: int) -> None:
    r.set(key, value, px=ttl_ms)


@attrs.define
class RedisAnswerCache(Generic[T]):
    """Entries in Redis, each for ``ttl_s``; ``encode`` and ``decode`` turn
    values into bytes and back, so what an entry holds stays opaque here.

    :meth:`statistics` is this process's view, kept without asking Redis:
    hits and misses are its own lookups; ``entries`` counts the puts it made
    whose time to live has not run out, and ``expired`` those whose time has
    (approximate: an overwrite counts twice, other instances' puts not at all).
    """

    redis: RedisClient
    ttl_s: float
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]
    _hits: int = attrs.field(default=0, init=False)
    _misses: int = attrs.field(default=0, init=False)
    _expired: int = attrs.field(default=0, init=False)
    # Every put's deadline; the TTL is fixed, so they are appended in order.
    _deadlines: collections.deque[float] = attrs.field(factory=collections.deque, init=False)

    async def get(self, key: str) -> T | None:
        """See :meth:`AnswerCache.get`."""
        raw = await self.redis.call(_get, self.redis.key("cache", key))
        if raw is None:
            self._misses += 1
            return None
        self._hits += 1
        return self.decode(raw)

    async def put(self, key: str, value: T) -> None:
        """See :meth:`AnswerCache.put`."""
        data = self.encode(value)
        await self.redis.call(_set, self.redis.key("cache", key), data, _ms(self.ttl_s))
        self._deadlines.append(trio.current_time() + self.ttl_s)

    def statistics(self) -> CacheStatistics:
        """Entries (approximate, see the class), hits, misses, expiries."""
        now = trio.current_time()
        while self._deadlines and self._deadlines[0] <= now:
            self._deadlines.popleft()
            self._expired += 1
        return CacheStatistics(len(self._deadlines), self._hits, self._misses, self._expired)


def _history(r: redis.Redis, key: str) -> list[bytes]:
    return cast("list[bytes]", r.lrange(key, 0, -1))


def _append(r: redis.Redis, key: str, values: list[bytes], keep: int, ttl_ms: int) -> None:
    # MULTI/EXEC: nobody sees the list untrimmed or without its expiry.
    with r.pipeline(transaction=True) as pipe:
        if values:  # RPUSH needs at least one value; an empty turn still touches
            pipe.rpush(key, *values)
            pipe.ltrim(key, -keep, -1)
        pipe.pexpire(key, ttl_ms)
        pipe.execute()


@attrs.define
class RedisSessionStore:
    """Sessions in Redis: a list of JSON messages per session, at most
    ``max_messages`` long, expiring ``ttl_s`` after the last append."""

    redis: RedisClient
    max_messages: int = 50
    ttl_s: float = 3600.0

    async def history(self, session: str) -> list[Message]:
        """See :meth:`SessionStore.history`."""
        key = self.redis.key("session", session)
        raw = await self.redis.call(_history, key)
        try:
            messages = [orjson.loads(item) for item in raw]
        except orjson.JSONDecodeError:
            messages = [None]
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            # Written by something else, or damaged: a session that cannot be
            # read starts afresh rather than failing every request of it.
            log.warning("session history unreadable: starting it afresh", session=session)
            await self.redis.call(lambda r: r.delete(key))
            return []
        return [cast(Message, m) for m in messages]

    async def append(self, session: str, messages: Sequence[Message]) -> None:
        """See :meth:`SessionStore.append`."""
        values = [orjson.dumps(message) for message in messages]
        key = self.redis.key("session", session)
        await self.redis.call(_append, key, values, self.max_messages, _ms(self.ttl_s))
