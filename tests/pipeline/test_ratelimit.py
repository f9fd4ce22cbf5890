"""Token-bucket rate limits in memory, on trio's virtual clock (exact times)."""

from __future__ import annotations

import pytest
import trio

from chatd.exceptions import RateLimited
from chatd.pipeline.ratelimit import MemoryRateLimiter


async def test_burst_then_refill(autojump_clock: trio.abc.Clock) -> None:
    """A minute's worth in a burst, then one more per 60/rate seconds."""
    limiter = MemoryRateLimiter(rate_per_minute=3)
    for _ in range(3):
        await limiter.check("a")
    with pytest.raises(RateLimited) as info:
        await limiter.check("a")
    assert info.value.retry_after_ms == 20_000
    await limiter.check("b")  # others have their own bucket
    await trio.sleep(20)
    await limiter.check("a")
    with pytest.raises(RateLimited):
        await limiter.check("a")


async def test_forgets_the_least_recent_client_beyond_max_clients() -> None:
    """Forgetting a client only ever forgives it: its bucket starts full again."""
    limiter = MemoryRateLimiter(rate_per_minute=1, max_clients=2)
    for client in ("a", "b", "c"):
        await limiter.check(client)
    await limiter.check("a")
    with pytest.raises(RateLimited):
        await limiter.check("c")


async def test_a_token_budget_is_per_utc_day() -> None:
    """A budget spent at 23:59:30 UTC opens again at midnight, and says when."""
    now = 20_000 * 86_400 - 30.0
    limiter = MemoryRateLimiter(0, tokens_per_day=100, wall_clock=lambda: now)
    await limiter.charge("a", 100)
    with pytest.raises(RateLimited) as info:
        await limiter.check("a")
    assert info.value.retry_after_ms == 30_000
    now += 30
    await limiter.check("a")
