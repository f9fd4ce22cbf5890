"""The rate limiter's contract, run against memory and Redis alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from trio.abc import Clock

from chatd.exceptions import RateLimited
from chatd.pipeline.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from chatd.stores.redis.client import RedisClient
from tests.conftest import CONTRACT_TIMEOUT as TIMEOUT

# A bucket of 120 refilling one every 0.5 s: a burst is over long before a
# token comes back (Redis runs on real time), and a refill is a short wait.
RATE = 120
REFILL_MS = 500

MakeLimiter = Callable[[float], RateLimiter]
MakeBudget = Callable[[int], RateLimiter]


@pytest.fixture
async def make_limiter(redis: RedisClient | None) -> MakeLimiter:
    """Makes a limiter of ``rate_per_minute`` with fresh buckets."""
    if redis is None:
        return MemoryRateLimiter
    return lambda rate: RedisRateLimiter(redis, rate)


@pytest.fixture
async def make_budget(redis: RedisClient | None) -> MakeBudget:
    """Makes a limiter of ``tokens_per_day`` (no rate limit) with fresh budgets."""
    if redis is None:
        return lambda budget: MemoryRateLimiter(0, budget)
    return lambda budget: RedisRateLimiter(redis, 0, budget)


async def spend(limiter: RateLimiter, client: str, chats: int) -> None:
    for _ in range(chats):
        await limiter.check(client)


async def spent_limiter(make_limiter: MakeLimiter) -> RateLimiter:
    """A limiter of ``RATE`` on which client "a" has just spent its whole bucket."""
    limiter = make_limiter(RATE)
    await spend(limiter, "a", RATE)
    return limiter


async def refused_retry_after_ms(limiter: RateLimiter, client: str) -> int:
    """The next check for ``client`` is refused with a retry hint; the hint, in ms."""
    with pytest.raises(RateLimited) as refused:
        await limiter.check(client)
    assert refused.value.retry_after_ms is not None
    return refused.value.retry_after_ms


async def test_a_minutes_worth_in_a_burst_then_refused(
    make_limiter: MakeLimiter, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = await spent_limiter(make_limiter)
        assert 0 < await refused_retry_after_ms(limiter, "a") <= REFILL_MS


async def test_refills_after_retry_after(make_limiter: MakeLimiter, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = await spent_limiter(make_limiter)
        retry_after_ms = await refused_retry_after_ms(limiter, "a")
        await trio.sleep(retry_after_ms / 1000)
        await limiter.check("a")
        with pytest.raises(RateLimited):
            await limiter.check("a")


async def test_clients_have_their_own_buckets(
    make_limiter: MakeLimiter, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = await spent_limiter(make_limiter)
        with pytest.raises(RateLimited):
            await limiter.check("a")
        await spend(limiter, "b", RATE)


async def test_zero_disables(make_limiter: MakeLimiter, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        await spend(make_limiter(0), "a", 1000)


async def test_a_slow_rate_still_allows_one(make_limiter: MakeLimiter, clock: Clock | None) -> None:
    """Below one a minute the bucket holds one chat, refilled at the rate."""
    with trio.fail_after(TIMEOUT):
        limiter = make_limiter(0.5)
        await limiter.check("a")
        assert 119_000 < await refused_retry_after_ms(limiter, "a") <= 120_000


async def test_concurrent_checks_admit_exactly_the_capacity(
    make_limiter: MakeLimiter, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = make_limiter(RATE)
        admitted = refused = 0

        async def check() -> None:
            nonlocal admitted, refused
            try:
                await limiter.check("a")
            except RateLimited:
                refused += 1
            else:
                admitted += 1

        async with trio.open_nursery() as nursery:
            for _ in range(RATE + 80):
                nursery.start_soon(check)
        assert (admitted, refused) == (RATE, 80)


# --- daily token budgets ---------------------------------------------------------------------

BUDGET = 1000


async def test_a_spent_token_budget_refuses_until_the_next_day(
    make_budget: MakeBudget, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = make_budget(BUDGET)
        await limiter.check("a")
        await limiter.charge("a", BUDGET - 1)
        await limiter.check("a")  # one token left: another chat may start
        await limiter.charge("a", 5)  # an answer may overrun the budget; the next is refused
        with pytest.raises(RateLimited) as refused:
            await limiter.check("a")
        assert "token budget" in refused.value.message
        retry_after_ms = refused.value.retry_after_ms
        assert retry_after_ms is not None and 0 < retry_after_ms <= 86_400_000


async def test_token_budgets_are_per_client(make_budget: MakeBudget, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = make_budget(BUDGET)
        await limiter.charge("a", BUDGET)
        with pytest.raises(RateLimited):
            await limiter.check("a")
        await limiter.check("b")


async def test_a_zero_budget_counts_nothing(make_budget: MakeBudget, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        limiter = make_budget(0)
        await limiter.charge("a", 10**9)
        await limiter.check("a")
