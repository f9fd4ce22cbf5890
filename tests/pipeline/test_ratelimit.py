"""Token-bucket rate limits on trio's virtual clock."""

from __future__ import annotations

import pytest
import trio

from chatd.exceptions import RateLimited
from chatd.pipeline.ratelimit import RateLimiter


async def test_burst_then_refill(autojump_clock: trio.abc.Clock) -> None:
    """A minute's worth in a burst, then one more per 60/rate seconds."""
    limiter = RateLimiter(rate_per_minute=3)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as info:
        limiter.check("a")
    assert info.value.retry_after_ms == 20_000
    limiter.check("b")  # others have their own bucket
    await trio.sleep(20)
    limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_zero_disables() -> None:
    """rate_per_minute 0 means no limit."""
    limiter = RateLimiter(rate_per_minute=0)
    for _ in range(1000):
        limiter.check("a")
