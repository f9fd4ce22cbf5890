"""The rows of protocol.md's error table a client's own frames cause, end to end:
bad_request (malformed frames and fields, binary frames, a duplicate id in
flight) and too_large (a frame or message over its limit), none of which
disturbs the connection's other requests.

The other rows: test_errors_refusals.py (unauthorized, rate_limited,
overloaded, shutting_down) and test_errors_failures.py (upstream_unavailable,
upstream_error, timeout, internal); clients that misbehave at volume:
test_errors_abuse.py.
"""

from __future__ import annotations

import pytest
import trio

from chatd.config import LimitsSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings, ask, start_chat

STORY = "tell me a long story about the sea"
"""A question the simulated LLM answers at length."""


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
    with trio.fail_after(10):
        await start_chat(chatd, client, "dup", "hello there", ttft_ms=200)
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
        with trio.fail_after(10):
            await start_chat(server, client, "live", STORY, ttft_ms=50, tokens_per_s=200)
            await client.chat("big", "x" * 3000)
            error = await client.finish("big")
            assert "done" not in client.types("live")  # it came while the answer streamed
            done = await client.finish("live")
    assert (error["type"], error["code"]) == ("error", "too_large")
    assert client.types("big") == ["error"]
    assert not client.events[None]
    assert done["finish_reason"] == "stop"


async def test_bad_frames_leave_requests_in_flight_alone(chatd: Chatd, client: ChatClient) -> None:
    """A burst of bad frames while an answer streams: each refused, the answer whole."""
    bad = [
        "{not json",
        '{"type": "chat", "id": "w", "message": 7}',
        '{"type": "nope", "id": "u"}',
        '{"type": "chat", "id": "live", "message": "again"}',
        "x" * 70_000,
    ]
    with trio.fail_after(10):
        await start_chat(chatd, client, "live", STORY, ttft_ms=50, tokens_per_s=200)
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


async def test_frame_far_over_the_limit_ends_the_connection_cleanly(chatd: Chatd) -> None:
    """A frame far past the limit closes the socket (1009): its running request
    is cancelled upstream and the connection leaves every count."""
    assert chatd.sim is not None
    sim = chatd.sim
    sim.set_timing(ttft_ms=10, tokens_per_s=20)
    with trio.fail_after(10):
        async with open_chat_client(chatd.ws_url) as client:
            await client.chat("long", STORY)
            await client.wait_for("long", "token")
            assert sim.statistics().active == 1
            await client.send('{"type": "chat", "id": "huge", "message": "' + "x" * 5_000_000)
            await client.gone.wait()
            assert client.ws.closed is not None and client.ws.closed.code == 1009
        await wait_until(lambda: sim.statistics().active == 0, within=5)
        await wait_until(lambda: not chatd.running.state.connections, within=5)
        assert not chatd.pipeline.requests
