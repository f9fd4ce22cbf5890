"""The answer cache's contract, run against memory and Redis alike."""

from __future__ import annotations

import pytest
import trio
from trio.abc import Clock

from chatd.stores.cache import AnswerCache, CacheStatistics, MemoryAnswerCache
from chatd.stores.redis.client import RedisClient
from chatd.stores.redis.stores import RedisAnswerCache
from tests.conftest import CONTRACT_TIMEOUT as TIMEOUT

TTL_S = 0.2


@pytest.fixture
async def cache(redis: RedisClient | None) -> AnswerCache[str]:
    """An empty cache of strings whose entries live ``TTL_S``."""
    if redis is None:
        return MemoryAnswerCache(TTL_S, max_entries=100)
    return RedisAnswerCache(redis, TTL_S, encode=str.encode, decode=bytes.decode)


async def test_get_what_was_put(cache: AnswerCache[str], clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        assert await cache.get("k") is None
        await cache.put("k", "answer")
        assert await cache.get("k") == "answer"
        assert await cache.get("other") is None
        assert cache.statistics() == CacheStatistics(entries=1, hits=1, misses=2, expired=0)


async def test_put_overwrites(cache: AnswerCache[str], clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        await cache.put("k", "first")
        await cache.put("k", "second")
        assert await cache.get("k") == "second"


async def test_entries_expire_after_ttl(cache: AnswerCache[str], clock: Clock | None) -> None:
    with trio.fail_after(TIMEOUT):
        await cache.put("k", "answer")
        await trio.sleep(TTL_S / 4)
        assert await cache.get("k") == "answer"
        await trio.sleep(TTL_S * 1.5)
        assert await cache.get("k") is None
        assert cache.statistics() == CacheStatistics(entries=0, hits=1, misses=1, expired=1)


async def test_values_round_trip_unchanged(cache: AnswerCache[str], clock: Clock | None) -> None:
    """Whatever the codec makes of a value comes back as it was put."""
    with trio.fail_after(TIMEOUT):
        text = 'ünïcode, "quotes", \n newlines and \x00'
        await cache.put("k", text)
        assert await cache.get("k") == text


async def test_memory_cache_is_bounded_in_bytes(autojump_clock: trio.abc.Clock) -> None:
    """Past max_bytes the least recently used entries go; an entry larger than
    the whole bound is not kept."""
    from chatd.stores.cache import MemoryAnswerCache

    cache = MemoryAnswerCache[str](ttl_s=60, max_entries=100, max_bytes=10, size=len)
    await cache.put("a", "xxxx")
    await cache.put("b", "yyyy")
    assert await cache.get("a") == "xxxx"  # now the most recently used
    await cache.put("c", "zzzz")  # 12 bytes: b, the least recently used, goes
    assert await cache.get("b") is None
    assert await cache.get("a") == "xxxx" and await cache.get("c") == "zzzz"
    await cache.put("huge", "h" * 11)
    assert await cache.get("huge") is None and cache.statistics().entries == 2
