"""Faults injected into each long-lived task: the failure is counted, the
task goes on (or only its connection ends), and chats are still answered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from chatd.config import JanitorSettings, LimitsSettings, RedisSettings, ServerSettings, Settings
from chatd.pipeline.admission import Admission
from chatd.pipeline.flight_reader import StreamReader
from chatd.pipeline.registry import RequestRegistry
from chatd.resilience.janitor import Janitor
from chatd.server import outbox as outbox_module
from chatd.server.connection import Connection
from chatd.testing import Chatd, open_chat_client, open_chatd, wait_until
from chatd.testing_redis import RedisServer
from tests.e2e.conftest import MakeSettings


def failures(chatd: Chatd, task: str) -> float:
    """``chatd_task_failures_total`` for ``task``, from the exposition."""
    text, _content_type = chatd.pipeline.metrics.render()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "chatd_task_failures_total" and sample.labels["task"] == task:
                return sample.value
    return 0.0


def fail_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, raising the first time it is called."""
    calls = 0

    def patched(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected fault")
        return original(*args, **kwargs)

    return patched


async def answers(chatd: Chatd) -> None:
    """A new connection's chat is answered."""
    async with open_chat_client(chatd.ws_url) as client:
        with trio.fail_after(10):
            await client.chat("after", "hello there")
            done = await client.finish("after")
    assert done["type"] == "done", done


def quick(make_settings: MakeSettings, **tables: Any) -> Settings:
    return make_settings(janitor=JanitorSettings(interval_s=0.05), **tables)


async def test_janitor_restarts(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The janitor's task raises: counted, restarted, and sweeping again."""
    monkeypatch.setattr(Janitor, "sweep", fail_once(Janitor.sweep))
    sweeps: list[float] = []
    monkeypatch.setattr(
        RequestRegistry, "sweep", lambda self: sweeps.append(trio.current_time()) or []
    )
    async with open_chatd(quick(make_settings)) as chatd:
        await wait_until(lambda: failures(chatd, "janitor") == 1 and len(sweeps) >= 2, within=10)
        await answers(chatd)


async def test_a_failing_sweeper_leaves_the_others_sweeping(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sweeper raising at every sweep is counted each time; the janitor
    and the other sweepers go on."""

    def sweep(self: RequestRegistry) -> list[Any]:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(RequestRegistry, "sweep", sweep)
    async with open_chatd(quick(make_settings)) as chatd:
        task = "sweeper RequestRegistry.sweep"
        await wait_until(lambda: failures(chatd, task) >= 3, within=10)
        assert failures(chatd, "janitor") == 0
        assert not chatd.running.state.supervisor.fatal.is_set()
        await answers(chatd)


async def test_queue_positions_restart(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue-position updater raises: counted, restarted, queue still served."""
    monkeypatch.setattr(Admission, "update_positions", fail_once(Admission.update_positions))
    async with open_chatd(make_settings(limits=LimitsSettings(llm_streams=1))) as chatd:
        await wait_until(lambda: failures(chatd, "queue_positions") == 1, within=10)
        await answers(chatd)


async def test_flights_reader_restarts(
    make_settings: MakeSettings, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flights' stream reader (Redis) raises: counted, restarted, and
    following a flight across instances works afterwards."""
    monkeypatch.setattr(StreamReader, "run", _fail_first_run(StreamReader.run))
    settings = make_settings(redis=RedisSettings(url=redis_server.url))
    async with open_chatd(settings) as chatd:
        await wait_until(lambda: failures(chatd, "flights_reader") == 1, within=10)
        await answers(chatd)


def _fail_first_run(original: Callable[..., Any]) -> Callable[..., Any]:
    calls = 0

    async def run(self: StreamReader) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected fault")
        return await original(self)

    return run


async def test_connection_reader_failure_ends_only_that_connection(
    chatd: Chatd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame that makes a connection's reader raise closes that connection
    (1011); the other connection's answer goes on; the failure is counted."""
    handle = Connection._handle

    def poisoned(self: Connection, raw: str | bytes, nursery: trio.Nursery) -> None:
        if raw == '{"type": "poison"}':
            raise RuntimeError("injected fault")
        handle(self, raw, nursery)

    monkeypatch.setattr(Connection, "_handle", poisoned)
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=50, tokens_per_s=200)
    async with open_chat_client(chatd.ws_url) as other, open_chat_client(chatd.ws_url) as victim:
        with trio.fail_after(10):
            await other.chat("long", "tell me a long story about the sea")
            await other.wait_for("long", "accepted")
            await victim.send('{"type": "poison"}')
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await victim.ws.send_message('{"type": "ping"}')
                    await trio.sleep(0.01)
            assert closed.value.reason.code == 1011
            done = await other.finish("long")
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert failures(chatd, "connection_reader") == 1
    await answers(chatd)


async def test_connection_writer_failure_ends_only_that_connection(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's writer (the task flushing merged tokens) raises: that
    connection closes (1011), the failure is counted, new chats are answered."""
    monkeypatch.setattr(outbox_module, "sleep_until_tick", _raising)
    # A second token within a second of the first waits for the writer.
    settings = make_settings(server=ServerSettings(token_merge_ms=1000))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as victim:
        assert chatd.sim is not None
        chatd.sim.set_timing(ttft_ms=10, tokens_per_s=50)  # many reads, not one
        with trio.fail_after(10):
            await victim.chat("long", "tell me a long story about the sea")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await victim.ws.send_message('{"type": "ping"}')
                    await trio.sleep(0.01)
        assert closed.value.reason.code == 1011
        assert failures(chatd, "connection_writer") == 1
        monkeypatch.undo()
        await answers(chatd)


async def _raising(when: float) -> None:
    raise RuntimeError("injected fault")
