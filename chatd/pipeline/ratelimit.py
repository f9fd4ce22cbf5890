"""Per-client rate limits and daily token budgets.

Each client (its API key, else its address) may start ``rate_per_minute``
chats a minute, in bursts of up to a minute's worth (a token bucket), and use
``tokens_per_day`` prompt and completion tokens per UTC day (an answer that
starts within the budget may overrun it; the next chat is refused). 0
disables either. A refusal is :class:`RateLimited` with the milliseconds
until a chat is allowed again. :class:`RateLimiter` is the interface;
:class:`MemoryRateLimiter` keeps the counts in this process and
:class:`RedisRateLimiter` in Redis, shared by every instance.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from chatd.exceptions import RateLimited

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured
    from redis import Redis
    from redis.commands.core import Script

    from chatd.stores.redis.client import RedisClient

__all__ = ["MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]


DAY_MS = 86_400_000


class RateLimiter(Protocol):
    """Decides whether a client may start another chat now."""

    @property
    def tokens_per_day(self) -> int:
        """Tokens a client may use per UTC day; 0: no budget."""
        ...

    async def check(self, client: str) -> None:
        """Take one chat from ``client``'s bucket, or raise :class:`RateLimited`
        (the bucket is empty, or today's token budget is spent)."""
        ...

    async def charge(self, client: str, tokens: int) -> None:
        """Count ``tokens`` against ``client``'s budget for today."""
        ...


def _bucket(rate_per_minute: float) -> tuple[float, float]:
    """A bucket's capacity (a minute's worth, at least one) and refill per second."""
    return max(1.0, rate_per_minute), rate_per_minute / 60.0


def _refused(rate_per_minute: float, retry_after_ms: int) -> RateLimited:
    return RateLimited(
        f"rate limit of {rate_per_minute:g} chats a minute reached",
        retry_after_ms=retry_after_ms,
    )


def _spent(tokens_per_day: int, retry_after_ms: int) -> RateLimited:
    return RateLimited(
        f"daily token budget of {tokens_per_day} spent; it renews at midnight UTC",
        retry_after_ms=max(1, retry_after_ms),
    )


@attrs.define
class MemoryRateLimiter:
    """Token buckets in this process, for at most ``max_clients`` clients
    (the least recently seen forgotten first, which only ever forgives)."""

    rate_per_minute: float
    tokens_per_day: int = 0
    max_clients: int = 100_000
    wall_clock: Callable[[], float] = time.time
    """Seconds since the epoch: budgets follow UTC days, not trio's clock."""
    _buckets: collections.OrderedDict[str, tuple[float, float]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )
    _used: collections.OrderedDict[str, tuple[int, int]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )
    """Tokens used by client: (day, tokens)."""

    async def check(self, client: str) -> None:
        """See :meth:`RateLimiter.check`."""
        # Nothing here waits: a cancel point, not a schedule point, since under
        # load every yield before the LLM call is a turn at the back of the queue.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.tokens_per_day > 0:
            now_ms = int(self.wall_clock() * 1000)
            day, used = self._used.get(client, (0, 0))
            if day == now_ms // DAY_MS and used >= self.tokens_per_day:
                raise _spent(self.tokens_per_day, (day + 1) * DAY_MS - now_ms)
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

    async def charge(self, client: str, tokens: int) -> None:
        """See :meth:`RateLimiter.charge`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.tokens_per_day <= 0:
            return
        today = int(self.wall_clock() * 1000) // DAY_MS
        day, used = self._used.pop(client, (today, 0))
        self._used[client] = (today, tokens + (used if day == today else 0))
        while len(self._used) > self.max_clients:
            self._used.popitem(last=False)


# The same bucket and budget as MemoryRateLimiter, read and written in one
# step: Redis runs a script atomically, so concurrent checks from any number of
# instances cannot both take the last token. Time is Redis's own (TIME, in
# whole ms so it survives Lua's 14-digit number formatting), never an
# instance's clock, which would differ between hosts. A bucket expires once it
# would be full again, when it is no different from a missing one; a day's
# budget (KEYS[2] plus the day's number) a day after that day ends. The answer
# is {0, 0} to go on, {1, ms} for an empty bucket, {2, ms} for a spent budget.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if budget > 0 then
    local day = math.floor(now / 86400000)
    local used = tonumber(redis.call('GET', KEYS[2] .. ':' .. day)) or 0
    if used >= budget then
        return {2, (day + 1) * 86400000 - now}
    end
end
if per_ms <= 0 then
    return {0, 0}
end
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
if wait_ms > 0 then
    return {1, wait_ms}
end
return {0, 0}
"""

_CHARGE_SCRIPT = """
local time = redis.call('TIME')
local day = math.floor(tonumber(time[1]) / 86400)
local key = KEYS[1] .. ':' .. day
redis.call('INCRBY', key, ARGV[1])
redis.call('PEXPIREAT', key, (day + 2) * 86400000)
return 0
"""


@attrs.define
class RedisRateLimiter:
    """Token buckets and budgets in Redis, per client, shared by every instance."""

    redis: RedisClient
    rate_per_minute: float
    tokens_per_day: int = 0
    _take: Script = attrs.field(init=False)
    _charge: Script = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Sent by hash (EVALSHA); redis-py loads them again after a Redis restart.
        self._take = self.redis.redis.register_script(_TAKE_SCRIPT)
        self._charge = self.redis.redis.register_script(_CHARGE_SCRIPT)

    async def check(self, client: str) -> None:
        """See :meth:`RateLimiter.check`."""
        if self.rate_per_minute <= 0 and self.tokens_per_day <= 0:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        keys = [self.redis.key("ratelimit", client), self.redis.key("budget", client)]
        refusal, wait_ms = await self.redis.call(self._run, keys)
        if refusal == 1:
            raise _refused(self.rate_per_minute, wait_ms)
        if refusal == 2:
            raise _spent(self.tokens_per_day, wait_ms)

    def _run(self, r: Redis, keys: list[str]) -> tuple[int, int]:
        """The script, in a worker thread: (0, 0) if allowed, else the refusal."""
        capacity, per_s = _bucket(self.rate_per_minute)
        args = [repr(capacity), repr(per_s / 1000), str(self.tokens_per_day)]
        refusal, wait_ms = self._take(keys=keys, args=args, client=r)
        return int(refusal), int(wait_ms)

    async def charge(self, client: str, tokens: int) -> None:
        """See :meth:`RateLimiter.charge`."""
        if self.tokens_per_day <= 0:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        key = self.redis.key("budget", client)
        await self.redis.call(lambda r: self._charge(keys=[key], args=[tokens], client=r))
