"""Shared flights and the answer cache, end to end: the contract every
implementation keeps, run once in memory and once on Redis (one instance;
two instances are ``test_scale_out.py``'s)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio

from chatd.config import CacheSettings, RedisSettings, Settings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

QUESTION = "tell me a long story about the sea"


@pytest.fixture(params=["memory", "redis"])
def make_settings(request: pytest.FixtureRequest, make_settings: MakeSettings) -> MakeSettings:
    """The test settings, with flights and the cache in memory or on Redis."""
    if request.param == "memory":
        return make_settings
    url = request.getfixturevalue("redis_url")

    def on_redis(**tables: Any) -> Settings:
        return attrs.evolve(make_settings(**tables), redis=RedisSettings(url=url))

    return on_redis


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """Event types in order, a run of token frames counted as one."""
    types = [e["type"] for e in events]
    return [t for i, t in enumerate(types) if t != "token" or i == 0 or types[i - 1] != "token"]


async def clients(stack: AsyncExitStack, chatd: Chatd, count: int) -> list[ChatClient]:
    return [await stack.enter_async_context(open_chat_client(chatd.ws_url)) for _ in range(count)]


async def test_hundred_identical_questions_one_upstream_call(make_settings: MakeSettings) -> None:
    """100 identical questions at once: 1 LLM call, 100 identical answers, 99 shared."""
    async with open_chatd(make_settings()) as chatd, AsyncExitStack() as stack:
        assert chatd.sim is not None
        chatd.sim.set_timing(ttft_ms=200, tokens_per_s=200)
        socks = await clients(stack, chatd, 4)
        with trio.fail_after(20):
            for i in range(100):
                await socks[i % 4].chat(f"q{i}", QUESTION)
            dones = [await socks[i % 4].finish(f"q{i}") for i in range(100)]
        assert all(d["type"] == "done" and d["finish_reason"] == "stop" for d in dones)
        answers = {socks[i % 4].answer(f"q{i}") for i in range(100)}
        assert len(answers) == 1 and answers != {""}
        assert sum(d["shared"] for d in dones) == 99
        assert chatd.sim.statistics().requests == 1
        assert chatd.pipeline.flights is not None
        assert chatd.pipeline.flights.statistics().in_flight == 0


async def test_first_asker_cancelling_leaves_others_whole(chatd: Chatd) -> None:
    """The asker who started the flight cancels; the joiners still get the whole answer."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=100)
    async with AsyncExitStack() as stack:
        first, second, third = await clients(stack, chatd, 3)
        with trio.fail_after(20):
            await first.chat("a", QUESTION)
            await first.wait_for("a", "token")
            await second.chat("b", QUESTION)
            await third.chat("c", QUESTION)
            await second.wait_for("b", "token")
            await first.send({"type": "cancel", "id": "a"})
            assert (await first.finish("a"))["finish_reason"] == "cancelled"
            done_b, done_c = await second.finish("b"), await third.finish("c")
        assert done_b["finish_reason"] == done_c["finish_reason"] == "stop"
        assert done_b["shared"] and done_c["shared"]
        assert second.answer("b") == third.answer("c")
        assert second.answer("b").startswith(first.answer("a"))
        assert chatd.sim.statistics().requests == 1


async def test_all_leaving_closes_upstream_and_next_starts_fresh(chatd: Chatd) -> None:
    """When every asker leaves, the LLM call closes and the key is free."""
    assert chatd.sim is not None
    sim = chatd.sim
    sim.set_timing(ttft_ms=10, tokens_per_s=20)
    async with AsyncExitStack() as stack:
        socks = await clients(stack, chatd, 3)
        with trio.fail_after(10):
            for i, sock in enumerate(socks):
                await sock.chat(f"x{i}", QUESTION)
            for i, sock in enumerate(socks):
                await sock.wait_for(f"x{i}", "token")
            for i, sock in enumerate(socks):
                await sock.send({"type": "cancel", "id": f"x{i}"})
        await wait_until(lambda: sim.statistics().client_disconnects >= 1, within=5)
        assert sim.statistics().requests == 1
        sim.set_timing(tokens_per_s=1000)
        with trio.fail_after(10):
            await socks[0].chat("again", QUESTION)
            done = await socks[0].finish("again")
        assert done["finish_reason"] == "stop" and done["shared"] is False
        assert sim.statistics().requests == 2


async def test_cache_replays_without_llm(chatd: Chatd, client: ChatClient) -> None:
    """A question answered before is replayed from the cache: cached, no LLM call."""
    assert chatd.sim is not None
    with trio.fail_after(10):
        await client.chat("one", "what is 2+2?")
        first = await client.finish("one")
        await client.chat("two", "What is  2+2?")  # normalised: same key
        second = await client.finish("two")
    assert first["cached"] is False and second["cached"] is True
    assert client.answer("one") == client.answer("two")
    # The same events, but tokens may be merged into other frames (merging follows timing).
    assert kinds(client.events["two"]) == kinds(client.events["one"])
    assert second["path"] == "tools"
    assert chatd.sim.statistics().requests == 2  # the first answer's two calls only


async def test_time_bound_answers_are_neither_shared_nor_cached(chatd: Chatd) -> None:
    """Questions that call the clock never share a flight or come from the cache."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=100)
    async with AsyncExitStack() as stack:
        socks = await clients(stack, chatd, 3)
        with trio.fail_after(10):
            for i, sock in enumerate(socks):
                await sock.chat(f"t{i}", "what time is it?")
            dones = [await sock.finish(f"t{i}") for i, sock in enumerate(socks)]
            await socks[0].chat("later", "what time is it?")
            later = await socks[0].finish("later")
    assert all(d["type"] == "done" and not d["shared"] for d in dones)
    assert later["cached"] is False
    for i, sock in enumerate(socks):
        assert "It is" in sock.answer(f"t{i}")
    assert chatd.pipeline.flights is not None
    assert chatd.pipeline.flights.statistics().diverged == 1


async def test_failed_flight_gives_each_its_own_error(chatd: Chatd) -> None:
    """An LLM error reaches every subscriber as its own error event."""
    assert chatd.sim is not None
    chatd.sim.set_fault("error", status=500, ttft_ms=100)
    async with AsyncExitStack() as stack:
        socks = await clients(stack, chatd, 3)
        with trio.fail_after(10):
            for i, sock in enumerate(socks):
                await sock.chat(f"e{i}", QUESTION)
            errors = [await sock.finish(f"e{i}") for i, sock in enumerate(socks)]
    assert [e["code"] for e in errors] == ["upstream_error"] * 3


async def test_flights_and_cache_off(make_settings: MakeSettings) -> None:
    """With both off, identical questions each make their own call."""
    from chatd.config import FlightsSettings

    settings = make_settings(
        cache=CacheSettings(enabled=False), flights=FlightsSettings(enabled=False)
    )
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        with trio.fail_after(10):
            for i in range(3):
                await client.chat(f"n{i}", QUESTION)
            dones = [await client.finish(f"n{i}") for i in range(3)]
        assert not any(d["shared"] or d["cached"] for d in dones)
        assert chatd.sim.statistics().requests == 3
