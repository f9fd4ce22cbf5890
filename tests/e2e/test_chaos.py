"""Chaos: hundreds of requests, random cancels and disconnects, a misbehaving LLM.

Every request on a connection that stays open gets exactly one terminal
event, and afterwards nothing is left running: the simulator has no active
stream, chatd's request registry and flights are empty, and the task count
is back where it started.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import trio

from chatd.config import LimitsSettings, LLMSettings, LLMTimeouts, ServerSettings, SimSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

QUESTIONS = [
    "tell me a long story about the sea",
    "hello there",
    "what is 17*23?",
    "How do I reset my password?",
    "what time is it?",
    "who won the 1998 world cup?",
]


def count_tasks() -> int:
    """Tasks in this trio run, leaving out the simulated LLM's (its keep-alive
    connections from chatd's pool rightly outlive the requests)."""

    def walk(task: trio.lowlevel.Task) -> int:
        if "serve_sim_llm" in task.name:
            return 0
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


async def faults(chatd: Chatd, rng: random.Random) -> None:
    """Change the simulator's behaviour every 100 ms."""
    assert chatd.sim is not None
    while True:
        mode = rng.choice(["ok", "ok", "error", "hang", "slow", "cut"])
        if mode == "error":
            chatd.sim.set_fault("error", status=rng.choice([500, 503, 429]))
        elif mode == "slow":
            chatd.sim.set_fault("slow", ttft_ms=rng.choice([50, 300]), tokens_per_s=30)
        elif mode == "cut":
            chatd.sim.set_fault("cut", after_tokens=rng.randint(1, 5))
        else:
            chatd.sim.set_fault(mode)
        await trio.sleep(0.1)


async def survivor(client: ChatClient, name: str, rng: random.Random, count: int) -> None:
    """Send ``count`` chats, cancelling some; each must end with one terminal event."""
    for i in range(count):
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


async def test_chaos(make_settings: MakeSettings) -> None:
    """300 requests through faults, cancels and disconnects; nothing left behind."""
    rng = random.Random(1234)
    settings = make_settings(
        sim=SimSettings(ttft_ms=20, tokens_per_s=200),
        llm=LLMSettings(timeouts=LLMTimeouts(connect_s=1, ttft_s=0.5, gap_s=0.5, total_s=3)),
        limits=LimitsSettings(request_timeout_s=4, llm_streams=50, max_queue=200),
        # hypercorn notices a vanished client at its next ping; make that soon
        server=ServerSettings(websocket_ping_interval_s=0.2),
    )
    async with open_chatd(settings) as chatd:
        assert chatd.sim is not None
        sim, pipeline = chatd.sim, chatd.pipeline
        await trio.sleep(0.1)
        tasks_before = count_tasks()
        with trio.fail_after(60):
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(open_chat_client(chatd.ws_url))
                    for _ in range(8)
                ]
                async with trio.open_nursery() as chaos:
                    chaos.start_soon(faults, chatd, rng)
                    async with trio.open_nursery() as load:
                        for n, client in enumerate(clients):
                            load.start_soon(survivor, client, f"c{n}", rng, 30)
                        for _ in range(20):
                            load.start_soon(doomed, chatd, rng)
                    chaos.cancel_scope.cancel()
                sim.set_fault("ok")
                for n, client in enumerate(clients):
                    for i in range(30):
                        await client.finish(f"c{n}-{i}")
                for n, client in enumerate(clients):
                    for i in range(30):
                        types = client.types(f"c{n}-{i}")
                        assert sum(t in ("done", "error") for t in types) == 1, types
                        assert types[-1] in ("done", "error"), types
            await wait_until(
                lambda: (
                    sim.statistics().active == 0
                    and len(pipeline.requests) == 0
                    and pipeline.flights is not None
                    and pipeline.flights.statistics().in_flight == 0
                    and count_tasks() == tasks_before
                    and pipeline.admission.statistics().llm_streams_in_use == 0
                    and pipeline.admission.statistics().queued == 0
                ),
                within=10,
            )
        assert chatd.running.state.connections == set()
