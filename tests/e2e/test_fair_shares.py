"""Fair shares: caps on connections and on a client's requests in flight, and
a flood from one client that does not starve another (issue 15, item 2)."""

from __future__ import annotations

import trio

from chatd.config import LimitsSettings, ServerSettings
from chatd.testing import open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings


async def test_connections_past_the_caps_are_refused(make_settings: MakeSettings) -> None:
    """A client's connection past its cap hears overloaded and is closed with
    1013; the others go on. (A client known by a loopback address only, as
    here without the key, is not capped per client: it may be many users.)"""
    settings = make_settings(
        limits=LimitsSettings(max_connections_per_client=2),
        server=ServerSettings(api_keys=["key-one-123"]),
    )
    async with open_chatd(settings) as chatd:
        url = chatd.ws_url + "?api_key=key-one-123"
        async with open_chat_client(url) as one, open_chat_client(url) as two:
            async with open_chat_client(url) as three:
                with trio.fail_after(10):
                    await three.gone.wait()
            (error,) = three.events[None]
            assert error["code"] == "overloaded" and error["retry_after_ms"] == 1000
            assert three.ws.closed is not None and three.ws.closed.code == 1013
            for client in (one, two):
                with trio.fail_after(10):
                    await client.chat("a", "hello there")
                    assert (await client.finish("a"))["type"] == "done"
        # The caps count open connections: these two have gone.
        async with open_chat_client(url) as again:
            with trio.fail_after(10):
                await again.chat("a", "hello there")
                assert (await again.finish("a"))["type"] == "done"


async def test_a_clients_requests_in_flight_are_capped(make_settings: MakeSettings) -> None:
    """Past limits.max_requests_per_client over all its connections, a chat is
    refused overloaded (one terminal event each); another client is not."""
    settings = make_settings(
        limits=LimitsSettings(max_requests_per_client=3),
        server=ServerSettings(api_keys=["key-one-123", "key-two-456"]),
    )
    async with open_chatd(settings) as chatd:
        assert chatd.sim is not None
        chatd.sim.set_timing(ttft_ms=200, tokens_per_s=100)
        one = chatd.ws_url + "?api_key=key-one-123"
        two = chatd.ws_url + "?api_key=key-two-456"
        async with (
            open_chat_client(one) as a,
            open_chat_client(one) as b,
            open_chat_client(two) as other,
        ):
            with trio.fail_after(20):
                for client, name in ((a, "a1"), (a, "a2"), (b, "b1"), (b, "b2")):
                    await client.chat(name, f"tell me a long story about the sea, {name}")
                await other.chat("o1", "tell me a long story about the sea, other")
                endings = {
                    name: await client.finish(name)
                    for client, name in ((a, "a1"), (a, "a2"), (b, "b1"), (b, "b2"), (other, "o1"))
                }
    refused = [n for n, e in endings.items() if e["type"] == "error"]
    assert len(refused) == 1 and refused[0] != "o1", endings
    assert endings[refused[0]]["code"] == "overloaded"
