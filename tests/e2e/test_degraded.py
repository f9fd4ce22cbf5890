"""With the LLM down, the knowledge base still answers what it answers
confidently (marked degraded); anything else gets the clear 503."""

from __future__ import annotations

import httpx

from chatd.config import LLMSettings
from chatd.testing import open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings

DOWN = "http://127.0.0.1:9/v1"  # nothing listens on the discard port


async def test_the_knowledge_base_answers_while_the_llm_is_down(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(llm=LLMSettings(url=DOWN, retries=0))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        for request_id in ("faq1", "faq2"):  # the second: the same, never from the cache
            await client.chat(request_id, "hi, how do I reset my password?")
            done = await client.finish(request_id)
            assert done["type"] == "done", done
            assert done["degraded"] is True and done["path"] == "tool_stream"
            assert done["cached"] is False
            assert "Forgot password" in client.answer(request_id)
        await client.chat("chat", "tell me a joke about the weather")
        error = await client.finish("chat")
        assert error["code"] == "upstream_unavailable"
        for _ in range(5):  # the breaker opens; the FAQ answer still comes
            await client.chat("more", "tell me a joke about the weather")
            refused = await client.finish("more")
            client.events.pop("more")
        assert refused["code"] == "upstream_unavailable" and refused["retry_after_ms"] > 0
        await client.chat("faq3", "How long does shipping take?")
        done = await client.finish("faq3")
        assert done["degraded"] is True
        async with httpx.AsyncClient(base_url=server.url) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "llm unavailable"


async def test_answers_are_not_marked_degraded_while_the_llm_is_up(
    make_settings: MakeSettings,
) -> None:
    async with (
        open_chatd(make_settings()) as server,
        open_chat_client(server.ws_url) as client,
    ):
        await client.chat("a", "How do I reset my password?")
        done = await client.finish("a")
        assert done["path"] == "tool_stream" and "degraded" not in done
