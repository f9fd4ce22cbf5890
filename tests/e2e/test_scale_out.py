"""Two chatd processes on one Redis: shared flights, sessions and rate limits.

Each instance is a real ``chatd serve`` process; the simulated LLM runs in the
test, so its counters say how many upstream calls the two made together.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from chatd.config import SimSettings
from chatd.llm.sim import SimServer, serve_sim_llm
from chatd.testing import ChatClient, open_chat_client, wait_until


@attrs.define
class Instance:
    """One ``chatd serve`` process and its JSON log."""

    process: trio.Process
    log: Path
    url: str = ""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/v1/ws"

    def lines(self) -> list[dict[str, Any]]:
        raw = self.log.read_bytes().splitlines()
        return [orjson.loads(line) for line in raw if line.startswith(b"{")]


@attrs.define
class Cluster:
    sim: SimServer
    instances: list[Instance]


async def start_instance(directory: Path, env: dict[str, str]) -> Instance:
    await trio.Path(directory).mkdir()
    log = directory / "chatd.log"
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chatd", "serve", "--port", "0"],
            stdout=out,
            stderr=out,
            cwd=directory,
            env={**os.environ, "CHATD_LOG_FORMAT": "json", **env},
        )
    instance = Instance(process, log)

    def listening() -> bool:
        return any(line.get("event") == "listening" for line in instance.lines())

    await wait_until(listening, within=30)
    instance.url = next(line["url"] for line in instance.lines() if line["event"] == "listening")
    await wait_until(
        lambda: any(x.get("event") == "using LLM" for x in instance.lines()), within=30
    )
    return instance


@pytest.fixture
async def cluster(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """A simulator and two chatd processes sharing ``redis_url``; a test's
    ``cluster_env`` marker adds environment settings."""
    marker = request.node.get_closest_marker("cluster_env")
    extra: dict[str, str] = marker.args[0] if marker else {}
    async with trio.open_nursery() as nursery:
        sim: SimServer = await nursery.start(serve_sim_llm, SimSettings(ttft_ms=300))
        env = {"CHATD_LLM_URL": sim.base_url, "CHATD_REDIS_URL": redis_url, **extra}
        instances = []
        try:
            for name in ("a", "b"):
                instances.append(await start_instance(tmp_path / name, env))
            yield Cluster(sim, instances)
        finally:
            for instance in instances:
                instance.process.kill()
                await instance.process.wait()
            nursery.cancel_scope.cancel()


async def ask(url: str, message: str, **fields: Any) -> tuple[ChatClient, dict[str, Any]]:
    async with open_chat_client(url) as client:
        await client.chat("q", message, **fields)
        return client, await client.finish("q")


async def test_identical_questions_on_two_instances_make_one_llm_call(cluster: Cluster) -> None:
    """100 identical questions, half on each instance, all at once: 1 upstream call."""
    done: list[dict[str, Any]] = []
    answers: set[str] = set()

    async def one(index: int) -> None:
        instance = cluster.instances[index % 2]
        client, event = await ask(instance.ws_url, "Tell me something about the sea, please.")
        done.append(event)
        answers.add(client.answer("q"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(one, index)
    assert [event["type"] for event in done] == ["done"] * 100
    assert all(event["finish_reason"] == "stop" for event in done)
    assert cluster.sim.statistics().requests == 1
    assert len(answers) == 1 and "" not in answers
    alone = [event for event in done if not event["shared"] and not event["cached"]]
    assert len(alone) == 1, "one request led; the 99 others shared its flight or its cache"
    followed = [
        span
        for line in cluster.instances[1].lines()
        if line.get("event") == "request summary"
        for span in line["spans"]
        if span["span"] == "flight"
    ]
    assert followed, "instance b answered through a flight"


async def test_a_session_continues_on_the_other_instance(cluster: Cluster) -> None:
    """A turn stored by instance a is part of the prompt on instance b."""
    a, b = cluster.instances
    with trio.fail_after(30):
        _client, first = await ask(
            a.ws_url, "My favourite colour is teal.", session="s1-0123456789abcdefghijklmn"
        )
        assert first["type"] == "done"
        _client, second = await ask(
            b.ws_url, "What did I just tell you?", session="s1-0123456789abcdefghijklmn"
        )
        assert second["type"] == "done"
    messages = cluster.sim.last_request.body["messages"]
    contents = [m.get("content") for m in messages]
    assert "My favourite colour is teal." in contents
    assert "What did I just tell you?" in contents


@pytest.mark.cluster_env({"CHATD_LIMITS_RATE_PER_MINUTE": "4"})
async def test_rate_limits_hold_across_instances(cluster: Cluster) -> None:
    """A client allowed 4 chats a minute gets 4 in all, whichever instance it asks."""
    outcomes: list[str] = []
    with trio.fail_after(30):
        for index in range(8):
            instance = cluster.instances[index % 2]
            _client, event = await ask(instance.ws_url, f"Tell me fact number {index}.")
            outcomes.append(event["type"] if event["type"] == "done" else event["code"])
    assert outcomes.count("done") == 4
    assert outcomes.count("rate_limited") == 4
    assert outcomes[:4] == ["done"] * 4
