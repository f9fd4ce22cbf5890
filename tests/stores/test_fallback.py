"""Redis stopping mid-test: chats go on from local memory, and Redis takes over again."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import trio

from chatd.config import BreakerSettings, RedisSettings
from chatd.exceptions import RateLimited
from chatd.observability.metrics import REDIS_STORES, Metrics
from chatd.pipeline.ratelimit import MemoryRateLimiter, RedisRateLimiter
from chatd.stores.cache import MemoryAnswerCache
from chatd.stores.fallback import FallbackAnswerCache, FallbackRateLimiter, FallbackSessionStore
from chatd.stores.redis.client import RedisClient, open_redis
from chatd.stores.redis.stores import RedisAnswerCache, RedisSessionStore
from chatd.stores.sessions import MemorySessionStore
from chatd.testing_redis import RedisServer

OPEN_S = 0.2
BREAKER = BreakerSettings(failure_threshold=2, open_timeout_s=OPEN_S)
TIMEOUT = 10.0


def stores(redis: RedisClient, metrics: Metrics) -> tuple[Any, ...]:
    """A cache, a session store and a rate limiter (2 a minute), each falling back."""
    count = metrics.redis_fallback
    return (
        FallbackAnswerCache(
            RedisAnswerCache(redis, 60.0, str.encode, bytes.decode),
            MemoryAnswerCache(60.0, 100),
            count,
        ),
        FallbackSessionStore(RedisSessionStore(redis), MemorySessionStore(), count),
        FallbackRateLimiter(RedisRateLimiter(redis, 2), MemoryRateLimiter(2), count),
    )


def fallbacks(metrics: Metrics, store: str) -> float | None:
    """``chatd_redis_fallbacks_total`` for ``store``."""
    return metrics.registry.get_sample_value("chatd_redis_fallbacks_total", {"store": store})


def events(logs: list[dict[str, Any]]) -> list[str]:
    """The fallback wrappers' lines: each a warning when Redis goes, info when back."""
    lines = [e for e in logs if e["event"].startswith("redis ")]
    for line in lines:
        assert line["log_level"] == ("info" if line["event"] == "redis back" else "warning")
    return [line["event"] for line in lines]


async def test_stores_fall_back_to_memory_and_return_to_redis(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        metrics = Metrics()
        settings = RedisSettings(url=redis_server.url, socket_timeout_s=1.0)
        async with open_redis(settings, BREAKER) as redis:
            cache, sessions, limiter = stores(redis, metrics)
            await cache.put("k", "from redis")
            await sessions.append("s", [{"role": "user", "content": "in redis"}])
            await limiter.check("a")

            redis_server.stop()
            with structlog.testing.capture_logs() as down:
                assert await cache.get("k") is None  # memory has not seen it
                await cache.put("k", "from memory")
                assert await cache.get("k") == "from memory"
                assert await sessions.history("s") == []
                await sessions.append("s", [{"role": "user", "content": "in memory"}])
                assert await sessions.history("s") == [{"role": "user", "content": "in memory"}]
                await limiter.check("a")
                await limiter.check("a")
                with pytest.raises(RateLimited):
                    await limiter.check("a")
            assert redis.breaker.state == "open"
            assert events(down) == [
                "redis unavailable, using local memory for cache",
                "redis unavailable, using local memory for sessions",
                "redis unavailable, using local memory for rate_limits",
            ]
            assert {s: fallbacks(metrics, s) for s in REDIS_STORES} == dict.fromkeys(
                REDIS_STORES, 3.0
            )

            await trio.to_thread.run_sync(redis_server.start)  # empty: no persistence
            await trio.sleep(OPEN_S)
            with structlog.testing.capture_logs() as up:
                assert await cache.get("k") is None  # the probe: Redis answers, empty
                assert redis.breaker.state == "closed"
                await cache.put("k", "from redis again")
                assert await cache.get("k") == "from redis again"
                assert await sessions.history("s") == []
                await limiter.check("a")
            assert events(up) == ["redis back", "redis back", "redis back"]
            assert fallbacks(metrics, "cache") == 3.0
