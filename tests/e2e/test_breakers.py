"""Circuit breakers seen from outside: fail fast, /readyz, fallback endpoints."""

from __future__ import annotations

import httpx
import trio

from chatd.config import (
    BreakerSettings,
    BreakersSettings,
    LLMFallbackSettings,
    LLMSettings,
    SimSettings,
)
from chatd.llm.sim import serve_sim_llm
from chatd.testing import open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings, open_chatd_with_llm_down


async def test_llm_down_opens_breaker_and_fails_fast(make_settings: MakeSettings) -> None:
    """After failure_threshold failures the breaker opens: chats fail at once,
    upstream_unavailable with retry_after_ms, and /readyz says 503 with the state."""
    async with open_chatd_with_llm_down(make_settings, failure_threshold=3) as (chatd, client):
        with trio.fail_after(10):
            for i in range(3):
                await client.chat(f"f{i}", "hello")
                assert (await client.finish(f"f{i}"))["code"] == "upstream_unavailable"
            await client.chat("fast", "hello")
            error = await client.finish("fast")
        assert error["code"] == "upstream_unavailable"
        assert "circuit breaker is open" in error["message"]
        assert 0 < error["retry_after_ms"] <= 60_000
        assert chatd.sim is not None and chatd.sim.statistics().requests == 3
        async with httpx.AsyncClient(base_url=chatd.url) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["dependencies"]["llm"]["breaker"] == "open"
        assert ready.json()["dependencies"]["kb"]["breaker"] == "closed"


async def test_fallback_endpoint_answers(
    make_settings: MakeSettings, nursery: trio.Nursery
) -> None:
    """With the primary failing, the fallback endpoint answers the same request."""
    fallback = await nursery.start(serve_sim_llm, SimSettings(ttft_ms=10, tokens_per_s=1000))
    settings = make_settings(
        llm=LLMSettings(retries=2, fallbacks=[LLMFallbackSettings(url=fallback.base_url)]),
        breakers=BreakersSettings(llm=BreakerSettings(failure_threshold=2)),
    )
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        assert chatd.sim is not None
        chatd.sim.set_fault("error", status=500)
        with trio.fail_after(10):
            await client.chat("a", "hello there")
            done = await client.finish("a")
        assert done["type"] == "done" and client.answer("a")
        assert chatd.sim.statistics().requests == 2
        assert fallback.statistics().requests == 1
