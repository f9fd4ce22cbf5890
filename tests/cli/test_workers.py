"""``chatd serve --workers N``: a supervisor and N worker processes on one port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from chatd.testing import open_chat_client, wait_until


class Supervisor:
    """A running ``chatd serve --workers N`` and its log (all processes write it)."""

    def __init__(self, proc: trio.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_bytes().decode(errors="replace")
        return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]

    def events(self, event: str, **fields: object) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, event: str, count: int = 1, **fields: object) -> list[dict[str, Any]]:
        await wait_until(lambda: len(self.events(event, **fields)) >= count, within=30)
        return self.events(event, **fields)


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[Supervisor]:
    log = tmp_path / "chatd.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chatd", "serve", "--workers", "2", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "CHATD_LOG_FORMAT": "json"},
        )
    running = Supervisor(proc, log)
    try:
        await running.wait_for("worker serving", count=2)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            for line in running.events("worker started"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line["pid"]), signal.SIGKILL)
        await proc.wait()


async def ask(ws_url: str, clients: int) -> list[dict[str, Any]]:
    """One chat on each of ``clients`` connections; their ``done`` events."""
    done: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        async with open_chat_client(ws_url) as client:
            await client.chat("c", f"hello from client {index}")
            done.append(await client.finish("c"))

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(one, index)
    return done


async def test_workers_share_one_port_restart_and_drain(supervisor: Supervisor) -> None:
    """Connections spread over both workers; a killed worker comes back; SIGTERM
    drains every process and the supervisor exits 0."""
    url = supervisor.events("listening")[0]["url"]
    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    done = await ask(ws_url, 16)
    assert [d["type"] for d in done] == ["done"] * 16
    served = {line["worker"] for line in supervisor.events("request summary")}
    assert served == {1, 2}, "the kernel spread 16 connections over both workers"

    first = supervisor.events("worker started", worker=1)[0]["pid"]
    os.kill(first, signal.SIGKILL)
    await supervisor.wait_for("worker died; starting it again", worker=1)
    await supervisor.wait_for("worker serving", count=3)
    assert [d["type"] for d in await ask(ws_url, 4)] == ["done"] * 4

    supervisor.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: supervisor.proc.poll() is not None, within=30)
    assert supervisor.proc.returncode == 0
    exited = supervisor.events("worker exited")
    assert {line["worker"] for line in exited} == {1, 2}
    assert all(line["status"] == 0 for line in exited)
    assert supervisor.events(
        "workers share no state without redis.url: each has its own "
        "cache, sessions, rate limits and flights"
    )
