"""Cancelling: a cancel frame, a closed socket, a slow tool; nothing left running."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from chatd.config import SimSettings, ToolsSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from chatd.tools.base import ToolContext, ToolResult, stream_text
from tests.e2e.conftest import MakeSettings, start_chat


async def wait_for_disconnects(chatd: Chatd, count: int) -> None:
    """The simulator saw ``count`` clients leave (how soon is the benchmarks' to
    measure: the bound only keeps a missing close from hanging the test)."""
    sim = chatd.sim
    assert sim is not None
    await wait_until(lambda: sim.statistics().client_disconnects >= count, within=5)


async def wait_idle(chatd: Chatd) -> None:
    """Every LLM slot is free again and the simulator has nothing under way."""
    sim = chatd.sim
    assert sim is not None
    await wait_until(
        lambda: (
            not chatd.pipeline.admission.statistics().llm_streams_in_use
            and not sim.statistics().active
        ),
        within=2,
    )


async def cancel(client: ChatClient, request_id: str) -> dict[str, Any]:
    """Cancel ``request_id``; the event that ends it."""
    await client.send({"type": "cancel", "id": request_id})
    return await client.finish(request_id)


async def test_cancel_mid_stream(chatd: Chatd, client: ChatClient) -> None:
    """cancel ends the request with done/cancelled and closes the upstream call."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=20)
    with trio.fail_after(10):
        await client.chat("a", "tell me a long story about the sea")
        await client.wait_for("a", "token")
        done = await cancel(client, "a")
    assert done["type"] == "done"
    assert done["finish_reason"] == "cancelled"
    assert done["path"] == "direct"
    await wait_for_disconnects(chatd, 1)
    await wait_idle(chatd)
    await trio.sleep(0.1)
    assert client.types("a")[-1] == "done", "nothing follows the terminal event"


async def test_cancel_while_queued_for_first_token(chatd: Chatd, client: ChatClient) -> None:
    """A cancel before the first token also closes the upstream call."""
    with trio.fail_after(10):
        await start_chat(chatd, client, "b", "hello there", ttft_ms=2000)
        sim = chatd.sim
        assert sim is not None
        await wait_until(lambda: sim.statistics().active >= 1, within=5)
        done = await cancel(client, "b")
    assert done["finish_reason"] == "cancelled"
    assert done["path"] is None
    await wait_for_disconnects(chatd, 1)


async def test_cancel_unknown_id_is_ignored(client: ChatClient) -> None:
    """Cancelling an unknown or finished id sends nothing back."""
    with trio.fail_after(10):
        await client.send({"type": "cancel", "id": "nobody"})
        await client.send({"type": "ping", "id": "after"})
        await client.wait_for("after", "pong")
    assert client.events["nobody"] == []


async def test_socket_close_cancels_everything(chatd: Chatd) -> None:
    """Closing the socket mid-answer cancels its requests and their upstream calls."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=20)
    async with open_chat_client(chatd.ws_url) as client:
        with trio.fail_after(10):
            await client.chat("a", "tell me a long story about the sea")
            await client.chat("b", "tell me another story about ships")
            await client.wait_for("a", "token")
            await client.wait_for("b", "token")
    await wait_for_disconnects(chatd, 2)
    await wait_idle(chatd)


@attrs.frozen
class SlowTool:
    """A tool that takes ``seconds``, and notes whether it was cancelled."""

    seconds: float
    cancelled: list[bool] = attrs.field(factory=list)
    name: str = "slow_lookup"
    description: str = "Looks something up, slowly."
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}}
    )
    natural_answer: bool = False
    time_bound: bool = False
    user_bound: bool = False
    timeout_s: float | None = None

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        try:
            await trio.sleep(self.seconds)
        except BaseException:
            self.cancelled.append(True)
            raise
        return ToolResult("looked it up")

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        await stream_text(result.answer or "", send)


@asynccontextmanager
async def slow_tool_chat(
    make_settings: MakeSettings, tmp_path: Path, **tables: Any
) -> AsyncIterator[tuple[ChatClient, SlowTool]]:
    """chatd (with ``tables`` in its settings) whose simulator calls a 5 s ``slow_lookup``
    for "slow"; a client on it, and the tool."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\npattern = "slow"\ntool_calls = [{name = "slow_lookup", arguments = {}}]\n'
    )
    sim = SimSettings(ttft_ms=10, tokens_per_s=1000, rules=str(rules))
    settings = make_settings(sim=sim, **tables)
    tool = SlowTool(seconds=5)
    async with (
        open_chatd(settings, extra_tools=[tool]) as server,
        open_chat_client(server.ws_url) as client,
    ):
        yield client, tool


async def test_tool_timeout(make_settings: MakeSettings, tmp_path: Path) -> None:
    """A tool past its timeout ends ok false, and the answer still comes."""
    timeout = ToolsSettings(timeout_s=0.2)
    async with slow_tool_chat(make_settings, tmp_path, tools=timeout) as (client, tool):
        with trio.fail_after(5):
            await client.chat("t", "do the slow thing")
            done = await client.finish("t")
        assert done["type"] == "done" and done["path"] == "tools"
        end = await client.wait_for("t", "tool_end")
        assert end["ok"] is False
        assert "timed out" in end["error"]
        assert tool.cancelled == [True]


async def test_cancel_stops_running_tools(make_settings: MakeSettings, tmp_path: Path) -> None:
    """A cancel while a tool runs stops the tool too."""
    async with slow_tool_chat(make_settings, tmp_path) as (client, tool):
        with trio.fail_after(5):
            await client.chat("t", "do the slow thing")
            await client.wait_for("t", "tool_start")
            done = await cancel(client, "t")
        assert done["finish_reason"] == "cancelled"
        assert tool.cancelled == [True]
