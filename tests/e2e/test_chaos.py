"""Chaos: hundreds of requests through random faults, seeded and reproducible.

The faults: clients that cancel, connections dropped with no close
handshake, slow readers, an LLM that errors, hangs, slows down and cuts its
streams, Redis killed and started again (in the Redis run), a tool that
raises, and at the end a drain (what SIGTERM does) with answers in flight.

Afterwards: every request on a connection that stayed open got exactly one
terminal event; once the load is over the simulator has no active stream
and chatd's request registry, flights, limiters and queue are empty; after
the drain nothing chatd started is left: no trio task, no busy worker
thread, no thread of its own; and the process's memory is within 10% of
where it was after warm-up.

Every run prints its seed; ``CHATD_CHAOS_SEED=N`` runs that seed again.
"""

from __future__ import annotations

import gc
import os
import random
import resource
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from chatd.config import (
    BreakerSettings,
    BreakersSettings,
    LimitsSettings,
    LLMSettings,
    LLMTimeouts,
    RedisSettings,
    ServerSettings,
    Settings,
    SimSettings,
)
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from chatd.testing_redis import RedisServer
from chatd.tools.faq import FrequentlyAsked
from tests.e2e.conftest import MakeSettings

QUESTIONS = [
    "tell me a long story about the sea",
    "hello there",
    "what is 17*23?",
    "How do I reset my password?",
    "what time is it?",
    "who won the 1998 world cup?",
    "why does everything explode?",  # the FAQ tool raises on this one
]
SURVIVORS, CHATS_EACH, DOOMED, SLOW = 8, 30, 20, 2


@pytest.fixture
def seed() -> int:
    """The run's seed: ``CHATD_CHAOS_SEED``, or a new one each run, printed."""
    value = int(os.environ.get("CHATD_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"chaos seed {value} (CHATD_CHAOS_SEED={value} runs it again)")
    return value


@pytest.fixture
def exploding_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FAQ tool raises an unexpected exception for questions that explode."""
    execute = FrequentlyAsked.execute

    async def execute_or_explode(self: FrequentlyAsked, arguments: Any, context: Any) -> Any:
        if "explode" in str(arguments.get("question", "")):
            raise ValueError("a bug in a tool")
        return await execute(self, arguments, context)

    monkeypatch.setattr(FrequentlyAsked, "execute", execute_or_explode)


def chaos_settings(make_settings: MakeSettings, **tables: Any) -> Settings:
    return make_settings(
        sim=SimSettings(ttft_ms=20, tokens_per_s=200),
        llm=LLMSettings(timeouts=LLMTimeouts(connect_s=1, ttft_s=0.5, gap_s=0.5, total_s=3)),
        limits=LimitsSettings(request_timeout_s=4, llm_streams=50, max_queue=200),
        # hypercorn notices a vanished client at its next ping; make that soon
        server=ServerSettings(websocket_ping_interval_s=0.2, shutdown_grace_s=1),
        **tables,
    )


async def test_chaos(make_settings: MakeSettings, seed: int, exploding_tool: None) -> None:
    """Faults, cancels, disconnects and a drain, in memory."""
    await run_chaos(chaos_settings(make_settings), random.Random(seed), seed)


async def test_chaos_with_redis(
    make_settings: MakeSettings, redis_server: RedisServer, seed: int, exploding_tool: None
) -> None:
    """The same, on Redis (flights, cache, sessions, rate limits), killed and
    started again now and then."""
    settings = chaos_settings(
        make_settings,
        redis=RedisSettings(url=redis_server.url, socket_timeout_s=0.5, flight_lease_s=1.0),
        breakers=BreakersSettings(redis=BreakerSettings(failure_threshold=2, open_timeout_s=0.5)),
    )
    await run_chaos(settings, random.Random(seed), seed, redis_server)


def count_tasks() -> int:
    """Tasks in this trio run, leaving out the simulated LLM's (its keep-alive
    connections from chatd's pool rightly outlive the requests)."""

    def walk(task: trio.lowlevel.Task) -> int:
        if "serve_sim_llm" in task.name:
            return 0
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


def own_threads() -> set[str]:
    """Threads that are not trio's idle cached workers (a busy worker has its
    job's name, an idle one ``Trio thread N``)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith("Trio thread ")}


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def faults(chatd: Chatd, rng: random.Random, redis: RedisServer | None) -> None:
    """Change the simulator's behaviour every 100 ms; now and then kill Redis
    and start it again."""
    assert chatd.sim is not None
    while True:
        mode = rng.choice(["ok", "ok", "error", "hang", "slow", "cut", "redis"])
        if mode == "error":
            chatd.sim.set_fault("error", status=rng.choice([500, 503, 429]))
        elif mode == "slow":
            chatd.sim.set_fault("slow", ttft_ms=rng.choice([50, 300]), tokens_per_s=30)
        elif mode == "cut":
            chatd.sim.set_fault("cut", after_tokens=rng.randint(1, 5))
        elif mode == "redis" and redis is not None:
            await trio.to_thread.run_sync(redis.stop)
            await trio.sleep(rng.uniform(0.1, 0.5))
            await trio.to_thread.run_sync(redis.start)
        elif mode in ("ok", "hang"):
            chatd.sim.set_fault(mode)
        await trio.sleep(0.1)


async def survivor(client: ChatClient, name: str, rng: random.Random) -> None:
    """Send chats, cancelling some; each must end with one terminal event."""
    for i in range(CHATS_EACH):
        request_id = f"{name}-{i}"
        await client.chat(request_id, rng.choice(QUESTIONS))
        if rng.random() < 0.3:
            await trio.sleep(rng.uniform(0, 0.3))
            await client.send({"type": "cancel", "id": request_id})
        await trio.sleep(rng.uniform(0, 0.05))


async def doomed(chatd: Chatd, rng: random.Random) -> None:
    """A connection whose TCP connection drops mid-answers, with no close handshake."""
    async with open_chat_client(chatd.ws_url) as client:
        for i in range(rng.randint(1, 5)):
            await client.chat(f"d{i}", rng.choice(QUESTIONS))
        await trio.sleep(rng.uniform(0, 0.4))
        await client.drop()


def check_terminals(client: ChatClient, ids: Iterator[str], seed: int) -> None:
    """Each request: exactly one terminal event, and it came last."""
    for request_id in ids:
        types = client.types(request_id)
        terminals = sum(t in ("done", "error") for t in types)
        assert terminals == 1 and types[-1] in ("done", "error"), (seed, request_id, types)
    others = client.types(None)  # frames no request owns: none are expected
    assert not others, (seed, client.events[None])


async def run_chaos(
    settings: Settings, rng: random.Random, seed: int, redis: RedisServer | None = None
) -> None:
    tasks_before, threads_before = count_tasks(), own_threads()
    async with open_chatd(settings) as chatd:
        assert chatd.sim is not None
        sim, pipeline = chatd.sim, chatd.pipeline
        async with open_chat_client(chatd.ws_url) as warm:  # every path once, for memory
            for i, question in enumerate(QUESTIONS):
                await warm.chat(f"w{i}", question)
            for i in range(len(QUESTIONS)):
                await warm.finish(f"w{i}")
        gc.collect()
        rss_before = rss_bytes()
        with trio.fail_after(60):
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(open_chat_client(chatd.ws_url))
                    for _ in range(SURVIVORS)
                ]
                slow = [
                    await stack.enter_async_context(
                        open_chat_client(chatd.ws_url, read_delay_s=0.02)
                    )
                    for _ in range(SLOW)
                ]
                async with trio.open_nursery() as chaos:
                    chaos.start_soon(faults, chatd, rng, redis)
                    async with trio.open_nursery() as load:
                        for n, client in enumerate(clients + slow):
                            load.start_soon(survivor, client, f"c{n}", rng)
                        for _ in range(DOOMED):
                            load.start_soon(doomed, chatd, rng)
                    chaos.cancel_scope.cancel()
                sim.set_fault("ok")
                if redis is not None and not redis.running:
                    await trio.to_thread.run_sync(redis.start)
                for n, client in enumerate(clients):
                    for i in range(CHATS_EACH):
                        await client.finish(f"c{n}-{i}")
                    check_terminals(client, (f"c{n}-{i}" for i in range(CHATS_EACH)), seed)
                for n, client in enumerate(slow, start=len(clients)):
                    # A slow reader may be dropped: its pongs wait behind its
                    # backlog, and a client that answers no ping looks gone.
                    ids = [f"c{n}-{i}" for i in range(CHATS_EACH)]
                    ended = [await client.finish_or_gone(request_id) for request_id in ids]
                    kept = [i for i, e in zip(ids, ended, strict=True) if e is not None]
                    check_terminals(client, iter(kept), seed)
                    assert len(kept) == len(ids) or client.gone.is_set(), (seed, n)
            await wait_until(
                lambda: (
                    sim.statistics().active == 0
                    and len(pipeline.requests) == 0
                    and pipeline.flights is not None
                    and pipeline.flights.statistics().in_flight == 0
                    and pipeline.admission.statistics().llm_streams_in_use == 0
                    and pipeline.admission.statistics().queued == 0
                ),
                within=10,
            )
            assert chatd.running.state.connections == set()
            await drain_mid_answers(chatd, rng, seed)
        # The drain has ended the server: nothing it started may be left.
        await wait_until(lambda: count_tasks() == tasks_before, within=20)
        assert sim.statistics().active == 0
        busy = own_threads() - threads_before
        assert not busy, (seed, busy)
        gc.collect()
        rss_after = rss_bytes()
        assert rss_after <= rss_before * 1.1, (seed, rss_before, rss_after)


async def drain_mid_answers(chatd: Chatd, rng: random.Random, seed: int) -> None:
    """A drain with answers in flight: each gets its terminal event (an
    answer, or cancelled at the grace), a chat after it hears
    shutting_down, and the connection then closes with 1001."""
    with trio.fail_after(20):
        async with open_chat_client(chatd.ws_url) as client:
            ids = [f"late-{i}" for i in range(10)]
            for request_id in ids:
                await client.chat(request_id, f"tell me a long story about the sea, {request_id}")
            for request_id in ids:
                await client.wait_for(request_id, "accepted")
            await trio.sleep(rng.uniform(0, 0.3))
            chatd.running.drain()
            await client.chat("after", "hello there")
            error = await client.finish("after")
            assert (error["type"], error["code"]) == ("error", "shutting_down"), (seed, error)
            for request_id in ids:
                await client.finish(request_id)
            check_terminals(client, iter(ids), seed)
            await wait_until(lambda: client.ws.closed is not None, within=10)
            assert client.ws.closed is not None
            assert client.ws.closed.code == 1001, (seed, client.ws.closed)
