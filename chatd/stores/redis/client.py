"""Redis as chatd calls it: redis-py's synchronous client in worker threads.

redis-py's asyncio client does not run under trio, so every command runs in a
worker thread through ``trio.to_thread.run_sync``, under a CapacityLimiter the
size of a :class:`redis.BlockingConnectionPool` (a thread never waits for a
connection another thread is not about to return). Socket timeouts bound
every call: a thread cannot be interrupted, so it must give up by itself.

Every call goes through the ``redis`` circuit breaker. redis-py's errors
become :mod:`chatd.exceptions` here: a connection refused, reset or timed out
is :class:`UpstreamUnavailable`, any other Redis error :class:`UpstreamError`.
Several commands that belong together go in one :meth:`RedisClient.call` (a
pipeline or a Lua script): each call is a thread hop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import redis
import trio

from chatd.config import BreakerSettings, RedisSettings
from chatd.exceptions import UpstreamError, UpstreamUnavailable
from chatd.resilience.breaker import CircuitBreaker
from chatd.resilience.cleanup import close_in_thread

__all__ = ["RedisClient", "RedisStatistics", "open_redis"]

T = TypeVar("T")


@attrs.frozen
class RedisStatistics:
    """Calls made and failed, and the worker threads in use."""

    calls: int
    errors: int
    threads_busy: int
    threads_total: int


@attrs.define(eq=False)
class RedisClient:
    """One Redis, shared by every store of the process."""

    redis: redis.Redis
    breaker: CircuitBreaker
    limiter: trio.CapacityLimiter
    prefix: str = "chatd:"
    _calls: int = attrs.field(default=0, init=False)
    _errors: int = attrs.field(default=0, init=False)

    def key(self, *parts: str) -> str:
        """A key under this deployment's prefix: ``key("cache", k)`` is ``chatd:cache:k``."""
        return self.prefix + ":".join(parts)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(self.redis, *args)`` in a worker thread, through the breaker."""
        self._calls += 1
        with self.breaker.attempt():
            try:
                return await trio.to_thread.run_sync(
                    fn, self.redis, *args, limiter=self.limiter, abandon_on_cancel=False
                )
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._errors += 1
                raise UpstreamUnavailable(f"redis is unreachable: {exc}") from exc
            except redis.RedisError as exc:
                self._errors += 1
                raise UpstreamError(f"redis failed: {exc}") from exc

    def dedicated(self) -> RedisClient:
        """A client of one connection and one thread, sharing this one's breaker and
        prefix: for blocking reads, which must never hold a connection that the
        request path waits for."""
        pool = self.redis.connection_pool
        own = redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs
        )
        return RedisClient(
            redis.Redis(connection_pool=own), self.breaker, trio.CapacityLimiter(1), self.prefix
        )

    def statistics(self) -> RedisStatistics:
        """Counters and thread use, without touching Redis."""
        return RedisStatistics(
            calls=self._calls,
            errors=self._errors,
            threads_busy=self.limiter.borrowed_tokens,
            threads_total=int(self.limiter.total_tokens),
        )


@asynccontextmanager
async def open_redis(
    settings: RedisSettings, breaker: BreakerSettings | None = None
) -> AsyncIterator[RedisClient]:
    """A :class:`RedisClient` for ``settings.url``, its pool closed on exit.

    Nothing is sent at open: a Redis that is down at start-up trips the
    breaker on first use, and the stores fall back, as when it fails later.
    """
    if settings.url is None:
        raise ValueError("open_redis needs redis.url")
    pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.threads,
        timeout=settings.socket_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
    )
    client = redis.Redis(connection_pool=pool)
    try:
        yield RedisClient(
            client,
            CircuitBreaker("redis", breaker or BreakerSettings()),
            trio.CapacityLimiter(settings.threads),
            settings.prefix,
        )
    finally:
        await close_in_thread("redis connections", pool.disconnect)
