"""The session store's contract, run against memory and Redis alike."""

from __future__ import annotations

import pytest
import trio
from trio.abc import Clock

from chatd.llm.types import Message
from chatd.stores.redis.client import RedisClient
from chatd.stores.redis.stores import RedisSessionStore
from chatd.stores.sessions import MemorySessionStore, SessionStore
from tests.conftest import CONTRACT_TIMEOUT as TIMEOUT

MAX_MESSAGES = 4
TTL_S = 0.3


@pytest.fixture
async def sessions(redis: RedisClient | None) -> SessionStore:
    """An empty store keeping ``MAX_MESSAGES`` per session for ``TTL_S``."""
    if redis is None:
        return MemorySessionStore(max_messages=MAX_MESSAGES, ttl_s=TTL_S)
    return RedisSessionStore(redis, max_messages=MAX_MESSAGES, ttl_s=TTL_S)


def turn(n: int) -> list[Message]:
    return [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]


def sweep(sessions: SessionStore) -> None:
    """What the janitor does: expire the stores that need it (Redis expires its own)."""
    expire = getattr(sessions, "expire", None)
    if expire is not None:
        expire()


async def test_unknown_session_has_no_history(sessions: SessionStore, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        assert await sessions.history("nobody") == []


async def test_history_in_order_of_appending(sessions: SessionStore, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        await sessions.append("s", turn(1))
        await sessions.append("s", turn(2))
        assert await sessions.history("s") == [*turn(1), *turn(2)]


async def test_history_keeps_the_latest_messages(
    sessions: SessionStore, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        for n in range(1, 4):
            await sessions.append("s", turn(n))
        assert await sessions.history("s") == [*turn(2), *turn(3)]
        await sessions.append("s", [*turn(4), *turn(5), *turn(6)])
        assert await sessions.history("s") == [*turn(5), *turn(6)]


async def test_sessions_are_isolated(sessions: SessionStore, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        await sessions.append("alice/s", turn(1))
        await sessions.append("bob/s", turn(2))
        assert await sessions.history("alice/s") == turn(1)
        assert await sessions.history("bob/s") == turn(2)


async def test_messages_round_trip_unchanged(sessions: SessionStore, clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        message: Message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "calc", "arguments": '{"x": 1}'}}],
        }
        await sessions.append("s", [message, {"role": "user", "content": "ünïcode"}])
        assert await sessions.history("s") == [message, {"role": "user", "content": "ünïcode"}]


async def test_sessions_expire_ttl_after_the_last_append(
    sessions: SessionStore, clock: Clock | None
) -> None:
    with trio.fail_after(TIMEOUT):
        await sessions.append("s", turn(1))
        await trio.sleep(TTL_S * 2 / 3)
        await sessions.append("s", turn(2))
        await trio.sleep(TTL_S * 2 / 3)
        sweep(sessions)
        assert await sessions.history("s") == [*turn(1), *turn(2)]
        await trio.sleep(TTL_S * 2 / 3)
        sweep(sessions)
        assert await sessions.history("s") == []


@pytest.mark.parametrize("stored", [b"{not json", b"[1, 2]", b'{"content": "no role"}'])
async def test_unreadable_redis_history_is_treated_as_empty(redis_url: str, stored: bytes) -> None:
    """A session list in Redis that cannot be read (damaged, or written by
    something else) reads as empty, and the session goes on from there."""
    from chatd.config import RedisSettings
    from chatd.stores.redis.client import open_redis

    async with open_redis(RedisSettings(url=redis_url)) as redis:
        sessions = RedisSessionStore(redis, max_messages=MAX_MESSAGES, ttl_s=60)
        await sessions.append("s", turn(1))
        key = redis.key("session", "s")
        await redis.call(lambda r: r.rpush(key, stored))
        with trio.fail_after(TIMEOUT):
            assert await sessions.history("s") == []
            await sessions.append("s", turn(2))
            assert await sessions.history("s") == turn(2)
