"""The LLM client on trio's virtual clock: per-phase deadlines and error translation.

An in-memory httpx transport plays the server, sleeping on trio's clock, so
every deadline is checked at its exact virtual time. The same client against
the real simulated LLM over loopback is in tests/e2e/test_llm_client.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from chatd import exceptions
from chatd.config import LLMSettings, LLMTimeouts
from chatd.llm import ChatRequest, Completion, TextDelta, open_llm_client

REQUEST = ChatRequest([{"role": "user", "content": "hi"}])
TIMEOUTS = LLMTimeouts(connect_s=1, ttft_s=2, gap_s=1, total_s=10)


def text_chunk(text: str) -> bytes:
    return (
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"
    )


END = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


@attrs.define
class Script(httpx.AsyncByteStream):
    """A response body: bytes, or a float meaning 'sleep this long first'."""

    steps: list[bytes | float]
    closed: bool = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self.steps:
            if isinstance(step, float):
                await trio.sleep(step)
            else:
                yield step

    async def aclose(self) -> None:
        self.closed = True


def sse(script: Script, status: int = 200, **headers: str) -> Callable[[httpx.Request], Any]:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            headers={"content-type": "text/event-stream", **headers},
            stream=script,
        )

    return handler


async def collect(handler: Callable[[httpx.Request], Any], **settings: Any) -> list[Any]:
    """The events of one call; reads are not coalesced unless ``coalesce_ms`` is given
    (the scripted body is read on demand, so a wait shifts what comes after it)."""
    settings.setdefault("coalesce_ms", 0)
    llm = LLMSettings(url="http://llm.test/v1", timeouts=TIMEOUTS, **settings)
    async with (
        open_llm_client(llm, transport=httpx.MockTransport(handler)) as client,
        client.stream(REQUEST) as events,
    ):
        return [event async for event in events]


async def test_text_stream_ends_with_completion(autojump_clock: trio.abc.Clock) -> None:
    """Deltas come as they arrive; the last event is the whole completion."""
    script = Script([0.5, text_chunk("Hel"), 0.5, text_chunk("lo"), END])
    events = await collect(sse(script))
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert events[-1] == Completion("Hello", (), "stop", None)
    assert trio.current_time() == pytest.approx(1.0)
    assert script.closed


async def test_reads_after_the_first_delta_wait_a_window(autojump_clock: trio.abc.Clock) -> None:
    """With coalesce_ms the first delta goes at once; the read after it waits the
    window (on a 10 ms tick); so does each read after one that found data
    waiting; a read that had to wait for the server is followed by one that
    does not wait (the stream is slower than the window)."""
    script = Script([0.5, text_chunk("a"), text_chunk("b"), 0.2, text_chunk("c"), END])
    times: list[float] = []
    llm = LLMSettings(url="http://llm.test/v1", timeouts=TIMEOUTS, coalesce_ms=50)
    async with (
        open_llm_client(llm, transport=httpx.MockTransport(sse(script))) as client,
        client.stream(REQUEST) as events,
    ):
        async for event in events:
            if isinstance(event, TextDelta):
                times.append(trio.current_time())
    assert times == pytest.approx([0.5, 0.55, 0.8])


@pytest.mark.parametrize(
    ("steps", "phase", "at"),
    [
        ([2.5, text_chunk("late")], "ttft", 2.0),
        # a gap deadline moves only when it would fire early: up to gap_s / 8 late
        ([1.0, text_chunk("a"), 1.5, text_chunk("b")], "gap", 2.125),
        # keep-alive comments are not tokens: they reset neither deadline
        ([0.9, b": ping\n\n", 0.9, b": ping\n\n", 0.9, text_chunk("x")], "ttft", 2.0),
        ([1.5] + [text_chunk("t"), 0.9] * 20, "total", 10.0),
    ],
)
async def test_phase_deadlines(
    autojump_clock: trio.abc.Clock, steps: list[bytes | float], phase: str, at: float
) -> None:
    """Each phase's deadline fires at its exact virtual time and names the phase."""
    script = Script(steps)
    with pytest.raises(exceptions.UpstreamTimeout) as info:
        await collect(sse(script))
    assert info.value.phase == phase
    assert trio.current_time() == pytest.approx(at)
    assert script.closed, "the upstream response must be closed"


async def test_a_busy_reader_is_not_the_llms_fault(autojump_clock: trio.abc.Clock) -> None:
    """A caller that keeps the stream waiting past the gap limit gets a timeout
    that does not blame the LLM (no UpstreamTimeout for the breaker to count)."""
    script = Script([text_chunk("a"), 0.1, text_chunk("b"), END])
    llm = LLMSettings(url="http://llm.test/v1", timeouts=TIMEOUTS, coalesce_ms=0)
    with pytest.raises(exceptions.DeadlineExceeded) as info:
        async with (
            open_llm_client(llm, transport=httpx.MockTransport(sse(script))) as client,
            client.stream(REQUEST) as events,
        ):
            async for _event in events:
                await trio.sleep(5)
    assert not isinstance(info.value, exceptions.UpstreamTimeout)
    assert "waited over 1 s for its reader" in str(info.value)
    assert trio.current_time() == pytest.approx(1.125)


async def test_headers_late_is_ttft(autojump_clock: trio.abc.Clock) -> None:
    """A server that sends no headers within the TTFT limit times out as ttft."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(100)
        raise AssertionError("unreachable")

    with pytest.raises(exceptions.UpstreamTimeout, match="ttft timeout after 2 s"):
        await collect(handler)
    assert trio.current_time() == pytest.approx(2.0)


async def test_cancel_closes_upstream(autojump_clock: trio.abc.Clock) -> None:
    """Cancelling the caller closes the upstream response at once."""
    script = Script([text_chunk("a"), 100.0])
    with trio.move_on_after(0.5):
        await collect(sse(script))
    assert script.closed
    assert trio.current_time() == pytest.approx(0.5)


async def test_http_error_keeps_provider_body() -> None:
    """An error status raises with the status and the provider's own body; its
    words go in the operators' detail (redacted), users read the status only."""
    body = (
        b'{"error": {"message": "Incorrect API key provided: Bearer sk-secret123456",'
        b' "type": "invalid_request"}}'
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=body, headers={"content-type": "application/json"})

    with pytest.raises(exceptions.UpstreamHTTPError) as info:
        await collect(handler)
    assert info.value.status == 401
    assert info.value.body == body.decode()
    assert str(info.value) == "LLM answered HTTP 401"
    assert info.value.detail == "Incorrect API key provided: Bearer ***"
    assert info.value.code == "upstream_error"


@pytest.mark.parametrize("status", [429, 503])
async def test_refusal_is_unavailable_with_retry_after(status: int) -> None:
    """429 and 503 mean 'not now': upstream_unavailable with Retry-After in ms."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=b"slow down", headers={"retry-after": "2"})

    with pytest.raises(exceptions.UpstreamRefused) as info:
        await collect(handler)
    assert info.value.retry_after_ms == 2000
    assert info.value.code == "upstream_unavailable"
    assert info.value.detail == "slow down"


async def test_connection_refused_is_unavailable() -> None:
    """Nothing listening: upstream_unavailable, the httpx error translated."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = LLMSettings(url=f"http://127.0.0.1:{port}/v1", timeouts=TIMEOUTS)
    with trio.fail_after(5):
        async with open_llm_client(llm) as client:
            with pytest.raises(
                exceptions.UpstreamUnavailable, match="cannot reach the LLM"
            ) as info:
                async with client.stream(REQUEST) as events:
                    [event async for event in events]
    assert not isinstance(info.value.__cause__, exceptions.UpstreamUnavailable)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert str(port) not in info.value.message  # where the LLM is, only operators read
    assert info.value.detail is not None
    assert info.value.detail.startswith(f"http://127.0.0.1:{port}/v1: ")


async def test_broken_mid_stream_is_protocol_error() -> None:
    """A connection that breaks mid-body becomes upstream_error, not an httpx error."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield text_chunk("a")
            raise httpx.RemoteProtocolError("peer closed connection")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    with pytest.raises(exceptions.UpstreamProtocolError, match="broke mid-stream: peer closed"):
        await collect(handler)


async def test_not_an_event_stream() -> None:
    """An HTML page where SSE was expected is a clear protocol error."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"})

    with pytest.raises(exceptions.UpstreamProtocolError, match="content-type 'text/html'"):
        await collect(handler)


async def test_server_ignoring_stream_still_answers() -> None:
    """A server that answers JSON to a streamed request gives the same events."""
    body = {
        "choices": [{"message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    events = await collect(handler)
    assert events[0] == TextDelta("Hi!")
    assert isinstance(events[-1], Completion)
    assert events[-1].content == "Hi!"


async def test_request_carries_key_model_headers_and_tools() -> None:
    """API key, extra headers, model and tools from config and request reach the server."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Script([END])
        )

    await collect(handler, api_key="sk-test", model="m1", extra_headers={"x-org": "chatd"})
    request = seen[0]
    assert request.url == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-org"] == "chatd"
    body = orjson.loads(request.content)
    assert body["model"] == "m1"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("header", "ms"), [("soon", None), ("", None), ("1.5", 1500)])
async def test_retry_after_forms(header: str, ms: int | None) -> None:
    """A malformed Retry-After is no hint, never an internal error."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b"busy", headers={"retry-after": header})

    with pytest.raises(exceptions.UpstreamRefused) as info:
        await collect(handler)
    assert info.value.retry_after_ms == ms
