"""Redis dying under a running chatd: chats go on from local memory; when
Redis comes back, the breaker's probe closes it and Redis is used again."""

from __future__ import annotations

import httpx
import structlog
import trio

from chatd.config import BreakerSettings, BreakersSettings, RedisSettings
from chatd.stores.fallback import FallbackSessionStore
from chatd.testing import open_chat_client, open_chatd, wait_until
from chatd.testing_redis import RedisServer
from tests.e2e.conftest import MakeSettings

SESSION = "s-0123456789abcdefghijklmn"
"""Unguessable: kept under its own name, whatever the connection."""


async def fallbacks(url: str) -> dict[str, float]:
    """``chatd_redis_fallbacks_total`` by store, from /metrics."""
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("chatd_redis_fallbacks_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('store="')[1].split('"')[0]] = float(value)
    return counts


async def test_chats_go_on_while_redis_is_down_and_use_it_again_after(
    make_settings: MakeSettings, redis_server: RedisServer
) -> None:
    settings = make_settings(
        redis=RedisSettings(url=redis_server.url, socket_timeout_s=0.5, flight_lease_s=1.0),
        breakers=BreakersSettings(redis=BreakerSettings(failure_threshold=2, open_timeout_s=0.5)),
    )
    with structlog.testing.capture_logs() as logs:
        async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
            breaker = chatd.pipeline.breakers["redis"]

            async def turn(request_id: str, message: str) -> dict[str, object]:
                with trio.fail_after(15):
                    await client.chat(request_id, message, session=SESSION)
                    return await client.finish(request_id)

            assert (await turn("before", "Tell me about the sea."))["type"] == "done"
            assert breaker.state == "closed"

            redis_server.stop()
            for index in range(4):
                done = await turn(f"down{index}", f"Tell me about mountain {index}.")
                assert done["type"] == "done", done
            assert breaker.state == "open"
            async with httpx.AsyncClient(base_url=chatd.url) as http:
                ready = await http.get("/readyz")
            assert ready.status_code == 200, "chatd still answers without Redis"
            assert ready.json()["dependencies"]["redis"]["breaker"] == "open"
            counted = await fallbacks(chatd.url)
            assert counted["sessions"] > 0 and counted["cache"] > 0
            warned = {e["store"] for e in logs if e["event"].startswith("redis unavailable")}
            assert {"sessions", "cache"} <= warned

            redis_server.start()
            await wait_until(lambda: breaker.state != "open", within=5)
            assert (await turn("after", "Tell me about rivers."))["type"] == "done"
            assert breaker.state == "closed"
            assert any(e["event"] == "redis back" for e in logs)
            # The turn went to Redis: the store there has it.
            sessions = chatd.pipeline.sessions
            assert isinstance(sessions, FallbackSessionStore)
            history = await sessions.redis.history(f"token/{SESSION}")
            # It came back empty (no persistence), and turns taken while it was
            # down stayed in local memory: only the last turn is there.
            assert [m["content"] for m in history if m["role"] == "user"] == [
                "Tell me about rivers."
            ]
