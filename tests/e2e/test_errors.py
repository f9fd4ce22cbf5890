"""Every row of protocol.md's error table, and bad frames, end to end."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import orjson
import pytest
import trio
import trio.lowlevel
import trio_websocket

from chatd.config import JanitorSettings, LimitsSettings, LLMSettings, ServerSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from chatd.trio_websocket_compat import close_stream
from tests.e2e.conftest import MakeSettings
from tests.observability.test_metrics import scrape, value


async def ask(client: ChatClient, request_id: str, message: str, **fields: Any) -> dict[str, Any]:
    with trio.fail_after(10):
        await client.chat(request_id, message, **fields)
        return await client.finish(request_id)


@pytest.mark.parametrize(
    ("frame", "request_id", "words"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"id": "x1", "message": "hi"}', "x1", "no 'type'"),
        ('{"type": "teleport", "id": "x2"}', "x2", "unknown frame type 'teleport'"),
        ('{"type": "chat", "id": "x3", "message": 5}', "x3", "'message' must be"),
        ('{"type": "chat", "id": "x4", "message": ""}', "x4", "'message' must be"),
        ('{"type": "chat", "id": "x5", "message": "hi", "session": 3}', "x5", "'session'"),
        ('{"type": "chat", "id": "x6", "message": "hi", "metadata": []}', "x6", "'metadata'"),
        ('{"type": "chat", "message": "hi"}', None, "'id' must be"),
        ('{"type": "chat", "id": "", "message": "hi"}', None, "'id' must be"),
        ('{"type": "cancel"}', None, "'cancel' needs"),
    ],
)
async def test_bad_frames_get_bad_request(
    client: ChatClient, frame: str, request_id: str | None, words: str
) -> None:
    """Each malformed frame gets bad_request (with its id when readable); the socket lives on."""
    with trio.fail_after(10):
        await client.send(frame)
        error = await client.wait_for(request_id, "error")
    assert error["code"] == "bad_request"
    assert words in error["message"]
    assert (error.get("id")) == request_id
    done = await ask(client, "after", "hello there")
    assert done["type"] == "done"


async def test_binary_frame_is_bad_request(chatd: Chatd, client: ChatClient) -> None:
    """A binary frame is refused as bad_request."""
    with trio.fail_after(10):
        await client.ws.send_message(b'{"type": "ping"}')
        error = await client.wait_for(None, "error")
    assert error["code"] == "bad_request"


async def test_duplicate_id_leaves_the_first_alone(chatd: Chatd, client: ChatClient) -> None:
    """A second chat under an id in flight is refused; the first finishes undisturbed."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=200)
    with trio.fail_after(10):
        await client.chat("dup", "hello there")
        await client.wait_for("dup", "accepted")
        await client.chat("dup", "hello again")
        error = await client.wait_for("dup", "error")
        assert error["code"] == "bad_request"
        assert "already in flight" in error["message"]
        done = await client.wait_for("dup", "done")
    assert done["finish_reason"] == "stop"
    assert client.answer("dup")


async def test_too_large(make_settings: MakeSettings) -> None:
    """A frame over max_frame_bytes or a message over max_message_chars is too_large."""
    settings = make_settings(limits=LimitsSettings(max_frame_bytes=2000, max_message_chars=100))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        with trio.fail_after(10):
            await client.send('{"message": "' + "x" * 3000 + '", "type": "chat", "id": "late"}')
            error = await client.wait_for(None, "error")  # its id is past what is read
            assert error["code"] == "too_large"
            done = await ask(client, "long", "y" * 101)
            assert done["code"] == "too_large"
            assert "limit is 100" in done["message"]


async def test_too_large_names_the_request(make_settings: MakeSettings) -> None:
    """An oversized frame whose id comes first gets too_large with that id at
    once, while the connection's other requests go on."""
    settings = make_settings(limits=LimitsSettings(max_frame_bytes=2000))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        assert server.sim is not None
        server.sim.set_timing(ttft_ms=50, tokens_per_s=200)
        with trio.fail_after(10):
            await client.chat("live", "tell me a long story about the sea")
            await client.wait_for("live", "accepted")
            await client.chat("big", "x" * 3000)
            error = await client.finish("big")
            assert "done" not in client.types("live")  # it came while the answer streamed
            done = await client.finish("live")
    assert (error["type"], error["code"]) == ("error", "too_large")
    assert client.types("big") == ["error"]
    assert not client.events[None]
    assert done["finish_reason"] == "stop"


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
        assert server.sim is not None
        server.sim.set_timing(ttft_ms=500)
        await client.chat("slow", "hello there")
        await client.wait_for("slow", "accepted")
        with trio.fail_after(0.4):  # refused before the first request even starts streaming
            error = await ask(client, "shed", "hello")
        assert error["code"] == "overloaded"
        assert error["retry_after_ms"] > 0
        assert (await client.finish("slow"))["type"] == "done"


async def test_overloaded_after_queue_timeout(make_settings: MakeSettings) -> None:
    """A queued chat hears its position, then is refused when the wait passes the limit."""
    settings = make_settings(limits=LimitsSettings(llm_streams=1, max_queue=5, queue_timeout_s=0.2))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        assert server.sim is not None
        server.sim.set_timing(ttft_ms=1000)
        await client.chat("slow", "hello there")
        await client.wait_for("slow", "accepted")
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


async def test_upstream_unavailable(make_settings: MakeSettings) -> None:
    """An LLM that cannot be reached is upstream_unavailable."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(llm=LLMSettings(url=f"http://127.0.0.1:{port}/v1"))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        error = await ask(client, "a", "hello")
        assert error["code"] == "upstream_unavailable"
        assert "cannot reach the LLM" in error["message"]
        assert error["retry_after_ms"] == 1000  # the table says there is always one


async def test_upstream_error(chatd: Chatd, client: ChatClient) -> None:
    """An LLM answering 500 is upstream_error, with the provider's words."""
    assert chatd.sim is not None
    chatd.sim.set_fault("error", status=500)
    error = await ask(client, "a", "hello")
    assert error["code"] == "upstream_error"
    assert "500" in error["message"]


async def test_request_deadline(make_settings: MakeSettings) -> None:
    """A request past limits.request_timeout_s ends with timeout and its LLM call is closed."""
    settings = make_settings(limits=LimitsSettings(request_timeout_s=0.3))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        assert server.sim is not None
        server.sim.set_fault("hang")
        error = await ask(client, "a", "hello")
        assert error["code"] == "timeout"
        sim = server.sim
        await wait_until(lambda: sim.statistics().client_disconnects >= 1, within=1)


async def test_shutting_down(chatd: Chatd, client: ChatClient) -> None:
    """While draining, new chats are refused with shutting_down and a retry hint."""
    chatd.pipeline.start_draining()
    error = await ask(client, "a", "hello")
    assert error["code"] == "shutting_down"
    assert error["retry_after_ms"] > 0


async def test_internal_error_names_the_request(
    chatd: Chatd, client: ChatClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is answered internal, naming the request id to look up in the log."""

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("chatd.pipeline.chat.build_prompt", broken)
    error = await ask(client, "a", "hello")
    assert error["code"] == "internal"
    accepted = client.events["a"][0]
    assert accepted["request_id"] in error["message"]


async def test_too_many_in_flight_on_one_connection(make_settings: MakeSettings) -> None:
    """A connection past its in-flight limit gets overloaded for the extra chat."""
    limits = LimitsSettings(max_requests_per_connection=1)
    async with (
        open_chatd(make_settings(limits=limits)) as server,
        open_chat_client(server.ws_url) as client,
    ):
        assert server.sim is not None
        server.sim.set_timing(ttft_ms=300)
        await client.chat("one", "hello there")
        await client.wait_for("one", "accepted")
        error = await ask(client, "two", "hello")
        assert error["code"] == "overloaded"
        assert (await client.finish("one"))["type"] == "done"


async def test_bad_frames_leave_requests_in_flight_alone(chatd: Chatd, client: ChatClient) -> None:
    """A burst of bad frames while an answer streams: each refused, the answer whole."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=50, tokens_per_s=200)
    bad = [
        "{not json",
        '{"type": "chat", "id": "w", "message": 7}',
        '{"type": "nope", "id": "u"}',
        '{"type": "chat", "id": "live", "message": "again"}',
        "x" * 70_000,
    ]
    with trio.fail_after(10):
        await client.chat("live", "tell me a long story about the sea")
        await client.wait_for("live", "accepted")
        for frame in bad:
            await client.send(frame)
        done = await client.wait_for("live", "done")
        await client.wait_for("u", "error")
        await client.wait_for("w", "error")
    assert done["finish_reason"] == "stop"
    assert client.answer("live")
    codes = sorted(e["code"] for e in client.events[None] if e["type"] == "error")
    assert codes == ["bad_request", "too_large"]
    live_errors = [e for e in client.events["live"] if e["type"] == "error"]
    assert [e["code"] for e in live_errors] == ["bad_request"]


async def test_client_flooding_frames_without_reading_is_dropped(
    make_settings: MakeSettings,
) -> None:
    """Replies pile up for nobody: a client that only sends is read no further
    once its unread replies pass four times server.send_buffer_bytes (here
    each reply is an error echoing a long unknown type), and is dropped as
    stalled by the janitor."""
    settings = make_settings(
        server=ServerSettings(send_buffer_bytes=16 * 1024),
        janitor=JanitorSettings(interval_s=0.1, stalled_client_s=1),
    )
    frame = orjson.dumps({"type": "x" * 30_000}).decode()
    with trio.fail_after(60):  # the closing too: a hang fails here, not in CI's timeout
        await flood_until_dropped(settings, frame)


async def flood_until_dropped(settings: Any, frame: str) -> None:
    async with (
        open_chatd(settings) as server,
        trio_websocket.open_websocket_url(server.ws_url, disconnect_timeout=5) as ws,
    ):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    with contextlib.suppress(trio_websocket.ConnectionClosed):
                        for _ in range(2000):
                            await ws.send_message(frame)

                nursery.start_soon(flood)
                await wait_until(lambda: not server.running.state.connections, within=15)
                nursery.cancel_scope.cancel()
        await close_stream(ws)  # trio-websocket leaves it open after an abort


async def test_a_pipelined_burst_is_answered_whole(make_settings: MakeSettings) -> None:
    """1,000 chats sent back to back by a client that reads: none is dropped;
    each gets exactly one terminal event (an answer, or overloaded past the
    per-connection cap), and the connection stays open."""
    settings = make_settings(server=ServerSettings(send_buffer_bytes=16 * 1024))
    async with (
        open_chatd(settings) as server,
        open_chat_client(server.ws_url, read_delay_s=0.002) as client,
    ):
        ids = [f"b{i}" for i in range(1000)]
        with trio.fail_after(60):
            for request_id in ids:
                await client.chat(request_id, f"hello there, number {request_id}")
            for request_id in ids:
                await client.finish(request_id)
        for request_id in ids:
            types = client.types(request_id)
            assert sum(t in ("done", "error") for t in types) == 1, (request_id, types)
        codes = {e["code"] for i in ids for e in client.events[i] if e["type"] == "error"}
        assert codes <= {"overloaded"}
        assert client.ws.closed is None


async def test_clients_resetting_mid_handshake_harm_nobody(chatd: Chatd) -> None:
    """Hundreds of clients that send a WebSocket upgrade and reset at once
    (some while chatd answers the handshake) end only their own connections."""
    port = int(chatd.url.rsplit(":", 1)[1])
    head = (
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reset = struct.pack("ii", 1, 0)  # SO_LINGER 0: close sends RST
    with trio.fail_after(30):
        for i in range(300):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(head)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            sock.close()
            if i % 3 == 0:
                await trio.lowlevel.checkpoint()
        async with open_chat_client(chatd.ws_url) as client:
            done = await ask(client, "after", "hello there")
    assert done["type"] == "done"


async def test_frame_far_over_the_limit_ends_the_connection_cleanly(chatd: Chatd) -> None:
    """A frame far past the limit closes the socket (1009): its running request
    is cancelled upstream and the connection leaves every count."""
    assert chatd.sim is not None
    sim = chatd.sim
    sim.set_timing(ttft_ms=10, tokens_per_s=20)
    with trio.fail_after(10):
        async with open_chat_client(chatd.ws_url) as client:
            await client.chat("long", "tell me a long story about the sea")
            await client.wait_for("long", "token")
            assert sim.statistics().active == 1
            await client.send('{"type": "chat", "id": "huge", "message": "' + "x" * 5_000_000)
            await client.gone.wait()
            assert client.ws.closed is not None and client.ws.closed.code == 1009
        await wait_until(lambda: sim.statistics().active == 0, within=5)
        await wait_until(lambda: not chatd.running.state.connections, within=5)
        assert not chatd.pipeline.requests
