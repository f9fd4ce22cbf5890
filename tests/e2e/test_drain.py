"""A drain over real sockets: in-flight answers finish, new ones are refused, 1001."""

from __future__ import annotations

import httpx
import trio

from chatd.config import ServerSettings
from chatd.testing import open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings


async def test_drain_lets_answers_finish_then_closes_1001(make_settings: MakeSettings) -> None:
    """During a drain: readyz 503, new chats shutting_down, the answer under way whole,
    then the socket closes with 1001."""
    async with open_chatd(make_settings()) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        chatd.sim.set_timing(ttft_ms=10, tokens_per_s=50)
        with trio.fail_after(10):
            await client.chat("long", "tell me a long story about the sea")
            await client.wait_for("long", "token")
            chatd.running.drain()
            await client.chat("late", "hello")
            refused = await client.finish("late")
            async with httpx.AsyncClient(base_url=chatd.url) as http:
                assert (await http.get("/readyz")).status_code == 503
            done = await client.finish("long")
            await wait_until(lambda: client.ws.closed is not None, within=5)
        assert refused["code"] == "shutting_down"
        assert done["finish_reason"] == "stop"
        assert client.ws.closed is not None and client.ws.closed.code == 1001


async def test_drain_grace_cancels_what_is_left(make_settings: MakeSettings) -> None:
    """An answer still running at the grace ends with shutting_down and a retry
    hint, its LLM call closed."""
    settings = make_settings(server=ServerSettings(shutdown_grace_s=0.3))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        sim = chatd.sim
        sim.set_timing(ttft_ms=10, tokens_per_s=5)
        with trio.fail_after(10):
            await client.chat("slow", "tell me a long story about the sea")
            await client.wait_for("slow", "token")
            chatd.running.drain()
            error = await client.finish("slow")
        assert (error["type"], error["code"]) == ("error", "shutting_down")
        assert error["retry_after_ms"] == 1000
        await wait_until(lambda: sim.statistics().client_disconnects >= 1, within=1)
