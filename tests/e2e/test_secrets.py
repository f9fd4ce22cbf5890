"""Secrets never shown: not in readiness, not in what users read, not in Redis
key names (issue 15: each of these leaked once); logs: tests/test_redaction.py."""

from __future__ import annotations

import attrs
import httpx
import trio

from chatd.config import LLMSettings, RedisSettings, ServerSettings
from chatd.llm.sim import serve_sim_llm
from chatd.testing import open_chat_client, open_chatd
from chatd.testing_redis import RedisServer
from tests.e2e.conftest import MakeSettings

SECRET = "hunter2pass"


async def test_llm_credentials_stay_hidden(make_settings: MakeSettings) -> None:
    """An LLM URL with a password: /readyz, users' errors and logs show ***."""
    base = make_settings()
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_sim_llm, base.sim)
        url = sim.base_url.replace("http://", f"http://svc:{SECRET}@")
        settings = attrs.evolve(base, llm=LLMSettings(url=url, retries=0))
        async with open_chatd(settings) as chatd:
            async with httpx.AsyncClient(base_url=chatd.url) as http:
                ready = (await http.get("/readyz")).json()
            assert ready["dependencies"]["llm"]["url"].startswith("http://svc:***@")
            sim.set_fault("error", status=401)
            async with open_chat_client(chatd.ws_url) as client:
                with trio.fail_after(10):
                    await client.chat("a", "hello there")
                    error = await client.finish("a")
            assert error["code"] == "upstream_error"
            assert SECRET not in repr(error) and "HTTP 401" in error["message"]
        nursery.cancel_scope.cancel()
    assert SECRET not in repr(ready)


async def test_unreachable_llm_error_names_no_address(make_settings: MakeSettings) -> None:
    """A user is told the LLM cannot be reached, not where it is."""
    settings = make_settings(llm=LLMSettings(url=f"http://svc:{SECRET}@127.0.0.1:9/v1", retries=0))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        with trio.fail_after(10):
            await client.chat("a", "hello there")
            error = await client.finish("a")
    assert error["code"] == "upstream_unavailable"
    assert SECRET not in error["message"] and "127.0.0.1" not in error["message"]


async def test_api_keys_never_name_redis_keys(
    make_settings: MakeSettings, redis_server: RedisServer
) -> None:
    """A client's key is known by its id in Redis (rate limits, sessions), never itself."""
    key = "client-key-0123456789"
    settings = make_settings(
        server=ServerSettings(api_keys=[key]),
        redis=RedisSettings(url=redis_server.url),
    )
    async with (
        open_chatd(settings) as chatd,
        open_chat_client(chatd.ws_url + f"?api_key={key}") as client,
    ):
        with trio.fail_after(10):
            await client.chat("a", "hello there", session="s1")
            done = await client.finish("a")
        assert done["type"] == "done"
        assert chatd.pipeline.redis is not None
        names = await chatd.pipeline.redis.call(lambda r: [k.decode() for k in r.keys("*")])
    assert names and not [name for name in names if key in name]
