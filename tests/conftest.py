"""Fixtures every test package may use: a real ``redis-server``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.testing_redis import RedisServer, redis_server_path


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
