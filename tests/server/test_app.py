"""``/v1/ws`` served by chatd's own WebSocket, everything else by hypercorn and quart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from chatd.config import JanitorSettings, KBSettings, Settings, SimSettings
from chatd.server.connection import Connection
from chatd.testing import open_chat_client, open_chatd, wait_until


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        sim=SimSettings(ttft_ms=10, tokens_per_s=1000),
        kb=KBSettings(path=str(tmp_path / "kb.sqlite3")),
    )


def task_names() -> Iterator[str]:
    """The name of every task of this run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    tasks = [root]
    while tasks:
        task = tasks.pop()
        yield task.name
        tasks.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)


async def test_idle_sockets_run_no_hypercorn_or_quart_tasks(settings: Settings) -> None:
    """A WebSocket is chatd's alone: no task of hypercorn's or quart-trio's is
    there for it. The sockets still answer, and each is forgotten once closed."""
    async with open_chatd(settings) as chatd:
        state = chatd.running.state

        def handlers() -> int:
            return len([n for n in task_names() if n.endswith("._run_handler")])

        # The start-up check of the LLM keeps a pooled connection to the simulator.
        await wait_until(lambda: handlers() == 1, within=5)
        before = handlers()
        async with open_chat_client(chatd.ws_url) as a, open_chat_client(chatd.ws_url) as b:
            await wait_until(lambda: len(state.connections) == 2, within=5)
            names = list(task_names())
            per_socket = ("quart_trio.", "hypercorn.trio.tcp_server.", "hypercorn.protocol.")
            assert not [n for n in names if n.startswith(per_socket)]
            assert handlers() == before + 2  # one task each
            for client in (a, b):
                await client.send({"type": "chat", "id": "q", "message": "hello"})
                assert (await client.finish("q"))["type"] == "done"
        await wait_until(lambda: not state.connections, within=5)


async def test_plain_get_of_the_socket_path_is_still_400(settings: Settings) -> None:
    """A GET of /v1/ws without the upgrade reaches quart: a bad request, not 404."""
    async with open_chatd(settings) as chatd, httpx.AsyncClient(base_url=chatd.url) as http:
        assert (await http.get("/v1/ws")).status_code == 400
        assert (await http.get("/v1/nope")).status_code == 404


async def test_reaped_connection_closes_1000(settings: Settings) -> None:
    """A connection the janitor drops closes normally (1000), as under quart."""
    settings = Settings(
        sim=settings.sim,
        kb=settings.kb,
        janitor=JanitorSettings(interval_s=0.05, idle_connection_s=0.2),
    )
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        await wait_until(lambda: client.ws.closed is not None, within=5)
        assert client.ws.closed is not None and client.ws.closed.code == 1000


async def test_handler_failure_closes_1011(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the connection's code closes the socket with 1011 (internal error)
    and leaves the server serving."""

    async def broken(self: Connection, transport: object) -> None:
        raise RuntimeError("bug")

    async with open_chatd(settings) as chatd:
        with monkeypatch.context() as patch:
            patch.setattr(Connection, "serve", broken)
            async with open_chat_client(chatd.ws_url) as broken_client:
                ws = broken_client.ws
                await wait_until(lambda: ws.closed is not None, within=5)
                assert ws.closed is not None and ws.closed.code == 1011
        async with open_chat_client(chatd.ws_url) as client:
            await client.send({"type": "chat", "id": "q", "message": "hello"})
            assert (await client.finish("q"))["type"] == "done"


async def test_an_idle_connection_is_its_reader_alone(settings: Settings) -> None:
    """No task but the connection's own while idle, and none left after a ping
    is answered: replies go out at once, a task starts only to wait for a
    socket that is full or for a merge window."""
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        await wait_until(lambda: len(chatd.running.state.connections) == 1, within=5)
        extra = ("._flush_until_done", "._stop_when_drained", "._run")
        assert [n for n in task_names() if n.endswith(extra)] == []
        await client.send({"type": "ping", "id": "p"})
        await client.wait_for("p", "pong")
        assert [n for n in task_names() if n.endswith(extra)] == []


async def test_drain_closes_idle_connections_old_and_new(settings: Settings) -> None:
    """A drain closes (1001) a connection that never sent a frame, and one opened
    while the drain waits for an answer under way."""
    async with (
        open_chatd(settings) as chatd,
        open_chat_client(chatd.ws_url) as busy,
        open_chat_client(chatd.ws_url) as idle,
    ):
        assert chatd.sim is not None
        chatd.sim.set_timing(ttft_ms=10, tokens_per_s=20)
        with trio.fail_after(10):
            await busy.send({"type": "chat", "id": "long", "message": "tell me a long story"})
            await busy.wait_for("long", "token")
            chatd.running.drain()
            await wait_until(lambda: idle.ws.closed is not None, within=5)
            async with open_chat_client(chatd.ws_url) as late:
                await wait_until(lambda: late.ws.closed is not None, within=5)
            assert busy.ws.closed is None, "the answer under way is still running"
            await busy.finish("long")
            await wait_until(lambda: busy.ws.closed is not None, within=5)
        assert [c.ws.closed.code for c in (idle, late, busy) if c.ws.closed] == [1001] * 3
