"""Fixtures the store contract suites share: each test runs once per backend.

A contract module binds :data:`FIXTURES` to their names (pytest finds
fixtures by name in the module; plain imports would read as unused), builds
its store from ``redis`` (``None`` for memory), and every test takes
``clock``: the memory stores read ``trio.current_time``, so they run on an
autojumping virtual clock and their sleeps cost nothing; Redis keeps its own
time, so those runs use the real clock and must keep their waits short.
(pytest-trio takes the clock only from a test's own arguments, hence
``clock`` on every test.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from chatd.config import RedisSettings
from chatd.stores.redis_client import RedisClient, open_redis

__all__ = ["BACKENDS", "FIXTURES", "TIMEOUT"]

BACKENDS = ["memory", "redis"]
TIMEOUT = 10.0
"""A guard on each test: no contract test comes near it unless something hangs."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which implementation this run of the test is about."""
    backend: str = request.param
    return backend


@pytest.fixture
def clock(backend: str) -> trio.abc.Clock | None:
    """Virtual time for memory; ``None`` (real time) for Redis, which expires on its own."""
    return trio.testing.MockClock(autojump_threshold=0) if backend == "memory" else None


@pytest.fixture
def redis_settings(backend: str, request: pytest.FixtureRequest) -> RedisSettings | None:
    """An empty Redis for the Redis runs (the server starts only if one needs it)."""
    if backend != "redis":
        return None
    return RedisSettings(url=request.getfixturevalue("redis_url"), socket_timeout_s=2.0)


@pytest.fixture
async def redis(redis_settings: RedisSettings | None) -> AsyncIterator[RedisClient | None]:
    """A :class:`RedisClient` on it, or ``None`` for the memory runs."""
    if redis_settings is None:
        yield None
        return
    async with open_redis(redis_settings) as client:
        yield client


FIXTURES = (backend, clock, redis_settings, redis)
"""In this order: ``backend, clock, redis_settings, redis = backends.FIXTURES``."""
