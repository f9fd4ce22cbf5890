"""Fixtures every test package may use: a real ``redis-server``, and the
backends the store contract suites run against.

A contract test takes ``backend`` (it runs once per backend) and builds its
store from ``redis`` (``None`` for memory); it also takes ``clock``: the
memory stores read ``trio.current_time``, so they run on an autojumping
virtual clock and their sleeps cost nothing, while Redis keeps its own time,
so those runs use the real clock and keep their waits short. (pytest-trio
takes the clock only from a test's own arguments.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
import trio
import trio.testing

from chatd.config import RedisSettings
from chatd.stores.redis.client import RedisClient, open_redis
from chatd.testing_redis import RedisServer, redis_server_path


def pytest_configure(config: pytest.Config) -> None:
    """structlog's defaults, but tracebacks as plain text: its default (rich,
    with every frame's locals) can take seconds to render a failure inside a
    server, holding the event loop, where chatd's own console logging
    (``configure_logging``) prints plain text."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    )


@pytest.fixture(scope="session")
def redis_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole run (tests flush it, see ``redis_url``)."""
    if redis_server_path() is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (CI does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_session_server: RedisServer) -> str:
    """The URL of an empty Redis."""
    redis_session_server.flush()
    return redis_session_server.url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, which it may stop and start."""
    if redis_server_path() is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (CI does)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


BACKENDS = ["memory", "redis"]
CONTRACT_TIMEOUT = 10.0
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
