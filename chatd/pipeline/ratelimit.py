"""Per-client rate limits: a token bucket per client key.

Each client (its API key, else its address) may start ``rate_per_minute``
chats a minute, in bursts of up to a minute's worth; 0 disables the limit. A
spent bucket refuses with :class:`RateLimited` and the milliseconds until the
next chat is allowed. :class:`RateLimiter` is the interface;
:class:`MemoryRateLimiter` keeps the buckets in this process and
:class:`RedisRateLimiter` in Redis, shared by every instance.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from chatd.exceptions import RateLimited

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured
    from redis import Redis
    from redis.commands.core import Script

    from chatd.stores.redis_client import RedisClient

__all__ = ["MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]


class RateLimiter(Protocol):
    """Decides whether a client may start another chat now."""

    async def check(self, client: str) -> None:
        """Take one chat from ``client``'s bucket, or raise :class:`RateLimited`."""
        ...


def _bucket(rate_per_minute: float) -> tuple[float, float]:
    """A bucket's capacity (a minute's worth, at least one) and refill per second."""
    return max(1.0, rate_per_minute), rate_per_minute / 60.0


def _refused(rate_per_minute: float, retry_after_ms: int) -> RateLimited:
    return RateLimited(
        f"rate limit of {rate_per_minute:g} chats a minute reached",
        retry_after_ms=retry_after_ms,
    )


@attrs.define
class MemoryRateLimiter:
    """Token buckets in this process, for at most ``max_clients`` clients
    (the least recently seen forgotten first, which only ever forgives)."""

    rate_per_minute: float
    max_clients: int = 100_000
    _buckets: collections.OrderedDict[str, tuple[float, float]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    async def check(self, client: str) -> None:
        """See :meth:`RateLimiter.check`."""
        # Nothing here waits: a cancel point, not a schedule point, since under
        # load every yield before the LLM call is a turn at the back of the queue.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.rate_per_minute <= 0:
            return
        now = trio.current_time()
        capacity, per_s = _bucket(self.rate_per_minute)
        tokens, updated = self._buckets.pop(client, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise _refused(self.rate_per_minute, math.ceil((1.0 - tokens) / per_s * 1000))
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


# The same bucket as MemoryRateLimiter, read and written in one step: Redis
# runs a script atomically, so concurrent checks from any number of instances
# cannot both take the last token. Time is Redis's own (TIME, in whole ms so
# it survives Lua's 14-digit number formatting), never an instance's clock,
# which would differ between hosts. A bucket expires once it would be full
# again, when it is no different from a missing one.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local wait_ms = 0
if tokens < 1 then
    wait_ms = math.ceil((1 - tokens) / per_ms)
else
    tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / per_ms) + 1)
return wait_ms
"""


@attrs.define
class RedisRateLimiter:
    """Token buckets in Redis, one hash per client, shared by every instance."""

    redis: RedisClient
    rate_per_minute: float
    _take: Script = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Sent by hash (EVALSHA); redis-py loads it again after a Redis restart.
        self._take = self.redis.redis.register_script(_TAKE_SCRIPT)

    async def check(self, client: str) -> None:
        """See :meth:`RateLimiter.check`."""
        if self.rate_per_minute <= 0:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        wait_ms = await self.redis.call(self._run, self.redis.key("ratelimit", client))
        if wait_ms > 0:
            raise _refused(self.rate_per_minute, wait_ms)

    def _run(self, r: Redis, key: str) -> int:
        """The script, in a worker thread: milliseconds to wait, 0 if allowed."""
        capacity, per_s = _bucket(self.rate_per_minute)
        return int(self._take(keys=[key], args=[repr(capacity), repr(per_s / 1000)], client=r))
