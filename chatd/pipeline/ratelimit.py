"""Per-client rate limits: a token bucket per client key, in this process.

Each client (its API key, else its address) may start ``rate_per_minute``
chats a minute, in bursts of up to a minute's worth. A spent bucket refuses
with :class:`RateLimited` and the milliseconds until the next chat is allowed.
The Redis implementation for several processes is a later sibling.
"""

from __future__ import annotations

import collections
import math

import attrs
import trio

from chatd.exceptions import RateLimited

__all__ = ["RateLimiter"]


@attrs.define
class RateLimiter:
    """Token buckets keyed by client; ``rate_per_minute`` 0 disables them."""

    rate_per_minute: float
    max_clients: int = 100_000
    _buckets: collections.OrderedDict[str, tuple[float, float]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def check(self, client: str) -> None:
        """Take one chat from ``client``'s bucket, or raise :class:`RateLimited`."""
        if self.rate_per_minute <= 0:
            return
        now = trio.current_time()
        capacity = max(1.0, self.rate_per_minute)
        per_s = self.rate_per_minute / 60.0
        tokens, updated = self._buckets.pop(client, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait_ms = math.ceil((1.0 - tokens) / per_s * 1000)
            raise RateLimited(
                f"rate limit of {self.rate_per_minute:g} chats a minute reached",
                retry_after_ms=wait_ms,
            )
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
