"""The rows of protocol.md's error table for chats chatd refuses because of who
asks or how busy it is, end to end: unauthorized, rate_limited (the rate, and
the day's token budget), overloaded (the queue full or waited out, the
per-connection cap) and shutting_down."""

from __future__ import annotations

import trio

from chatd.config import LimitsSettings, ServerSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings, ask, start_chat
from tests.observability.test_metrics import scrape, value


async def test_unauthorized(make_settings: MakeSettings) -> None:
    """With API keys set, a WebSocket without a good key hears unauthorized and
    is closed (1008) at once, holding nothing; with a key its chats run."""
    settings = make_settings(server=ServerSettings(api_keys=["sesame"]))
    async with open_chatd(settings) as server:
        for url in (server.ws_url, server.ws_url + "?api_key=wrong"):
            async with open_chat_client(url) as client:
                with trio.fail_after(10):
                    await client.gone.wait()
                (error,) = client.events[None]
                assert error["code"] == "unauthorized"
                assert client.ws.closed is not None and client.ws.closed.code == 1008
        assert not server.running.state.connections
        async with open_chat_client(server.ws_url + "?api_key=sesame") as client:
            assert (await ask(client, "c", "hello"))["type"] == "done"
        headers = [("Authorization", "Bearer sesame")]
        async with open_chat_client(server.ws_url, extra_headers=headers) as client:
            assert (await ask(client, "d", "hello"))["type"] == "done"


async def test_rate_limited(make_settings: MakeSettings) -> None:
    """Past the per-client rate, chats are refused with a retry hint."""
    settings = make_settings(limits=LimitsSettings(rate_per_minute=2))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        assert (await ask(client, "a", "hello"))["type"] == "done"
        assert (await ask(client, "b", "hello"))["type"] == "done"
        error = await ask(client, "c", "hello")
        assert error["code"] == "rate_limited"
        assert error["retry_after_ms"] > 0
        assert error["request_id"].startswith("req_")  # the id the logs know it by
        bad = await ask(client, "d", "")
        assert bad["code"] == "bad_request" and "request_id" not in bad  # never was one


async def test_a_spent_token_budget_is_rate_limited_for_that_key_alone(
    make_settings: MakeSettings,
) -> None:
    """A key whose answers used its day's tokens is refused until midnight UTC;
    another key goes on."""
    settings = make_settings(
        server=ServerSettings(api_keys=["alpha", "beta"]),
        limits=LimitsSettings(tokens_per_day=1),
    )
    async with open_chatd(settings) as server:
        async with open_chat_client(server.ws_url + "?api_key=alpha") as client:
            done = await ask(client, "a", "hello")
            assert done["type"] == "done" and sum(done["usage"].values()) > 1
            error = await ask(client, "b", "hello again")
            assert error["code"] == "rate_limited"
            assert "token budget" in error["message"]
            assert 0 < error["retry_after_ms"] <= 86_400_000
        async with open_chat_client(server.ws_url + "?api_key=beta") as client:
            assert (await ask(client, "c", "hello"))["type"] == "done"


async def test_a_client_that_goes_mid_answer_still_pays_for_its_tokens(
    make_settings: MakeSettings,
) -> None:
    """Closing the socket cancels the answer's work at once, but not the charge
    of the tokens it used: the key's next chat meets the spent budget."""
    settings = make_settings(
        server=ServerSettings(api_keys=["alpha"]), limits=LimitsSettings(tokens_per_day=1)
    )
    async with open_chatd(settings) as server:
        assert server.sim is not None
        server.sim.set_timing(tokens_per_s=20)
        async with open_chat_client(server.ws_url + "?api_key=alpha") as client:
            await client.chat("a", "tell me a long story about the sea")
            await client.wait_for("a", "token")
        metrics = server.pipeline.metrics
        await wait_until(
            lambda: value(scrape(metrics), "chatd_cancellations_total", cause="disconnect") == 1,
            within=10,
        )
        async with open_chat_client(server.ws_url + "?api_key=alpha") as client:
            error = await ask(client, "b", "hello again")
            assert error["code"] == "rate_limited" and "token budget" in error["message"]


async def test_overloaded_when_queue_full(make_settings: MakeSettings) -> None:
    """With every LLM slot taken and no queue room, a chat is refused at once."""
    settings = make_settings(limits=LimitsSettings(llm_streams=1, max_queue=0))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        await start_chat(server, client, "slow", "hello there", ttft_ms=500)
        with trio.fail_after(0.4):  # refused before the first request even starts streaming
            error = await ask(client, "shed", "hello")
        assert error["code"] == "overloaded"
        assert error["retry_after_ms"] > 0
        assert (await client.finish("slow"))["type"] == "done"


async def test_overloaded_after_queue_timeout(make_settings: MakeSettings) -> None:
    """A queued chat hears its position, then is refused when the wait passes the limit."""
    settings = make_settings(limits=LimitsSettings(llm_streams=1, max_queue=5, queue_timeout_s=0.2))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        await start_chat(server, client, "slow", "hello there", ttft_ms=1000)
        error = await ask(client, "waits", "hello")
        assert client.types("waits") == ["accepted", "queued", "error"]
        assert client.events["waits"][1]["position"] == 1
        assert error["code"] == "overloaded"


async def test_queued_then_served(make_settings: MakeSettings) -> None:
    """A chat queued behind another is served when the slot frees."""
    settings = make_settings(limits=LimitsSettings(llm_streams=1, max_queue=5))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        await client.chat("first", "hello there")
        done = await ask(client, "second", "hello again")
        assert done["type"] == "done"
        assert "queued" in client.types("second")
        assert done["timings"]["queue_ms"] >= 0


async def test_shutting_down(chatd: Chatd, client: ChatClient) -> None:
    """While draining, new chats are refused with shutting_down and a retry hint."""
    chatd.pipeline.start_draining()
    error = await ask(client, "a", "hello")
    assert error["code"] == "shutting_down"
    assert error["retry_after_ms"] > 0


async def test_too_many_in_flight_on_one_connection(make_settings: MakeSettings) -> None:
    """A connection past its in-flight limit gets overloaded for the extra chat."""
    limits = LimitsSettings(max_requests_per_connection=1)
    async with (
        open_chatd(make_settings(limits=limits)) as server,
        open_chat_client(server.ws_url) as client,
    ):
        await start_chat(server, client, "one", "hello there", ttft_ms=300)
        error = await ask(client, "two", "hello")
        assert error["code"] == "overloaded"
        assert (await client.finish("one"))["type"] == "done"
