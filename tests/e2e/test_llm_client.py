"""The LLM client against the real simulated LLM over loopback."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import trio

from chatd.config import LLMSettings, LLMTimeouts, SimSettings
from chatd.exceptions import (
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamTimeout,
)
from chatd.llm import (
    ChatRequest,
    Completion,
    LLMClient,
    TextDelta,
    ToolCallBegin,
    open_llm_client,
)
from chatd.llm.sim import SimServer, serve_sim_llm
from chatd.llm.transport import TrioTransport
from chatd.testing import wait_until


def tool(name: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": name,
            "parameters": {"type": "object", "properties": properties},
        },
    }


TOOLS = [
    tool("calculator", expression={"type": "string"}),
    tool("clock"),
    tool("frequently_asked", question={"type": "string"}),
]


def ask(text: str, **kwargs: Any) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], **kwargs)


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    server: SimServer = await nursery.start(
        serve_sim_llm, SimSettings(ttft_ms=20, tokens_per_s=2000)
    )
    return server


@pytest.fixture(params=["chatd", "httpx"])
def transport(request: pytest.FixtureRequest) -> httpx.AsyncBaseTransport:
    """Every test here runs over chatd's transport and over httpx's default one."""
    if request.param == "chatd":
        return TrioTransport()
    return httpx.AsyncHTTPTransport()


@pytest.fixture
async def client(sim: SimServer, transport: httpx.AsyncBaseTransport) -> AsyncIterator[LLMClient]:
    settings = LLMSettings(
        url=sim.base_url,
        timeouts=LLMTimeouts(connect_s=2, ttft_s=1, gap_s=0.5, total_s=10),
    )
    async with open_llm_client(settings, transport=transport) as llm:
        yield llm


async def stream(client: LLMClient, request: ChatRequest) -> list[Any]:
    with trio.fail_after(10):
        async with client.stream(request) as events:
            return [event async for event in events]


async def wait_for_disconnects(sim: SimServer, count: int) -> None:
    """The simulator saw ``count`` clients leave: how soon is measured in the
    benchmarks; here the guard only keeps a broken close from hanging."""
    await wait_until(lambda: sim.statistics().client_disconnects >= count, within=5)


async def test_text_answer_streams(sim: SimServer, client: LLMClient) -> None:
    """A chit-chat message streams text and ends with the whole completion and usage.
    (Tokens 10 ms apart: at the fixture's 2,000 a second a busy machine can read
    the whole answer at once.)"""
    sim.set_timing(tokens_per_s=100)
    events = await stream(client, ask("hello there, nice day"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    completion = events[-1]
    assert isinstance(completion, Completion)
    assert len(deltas) > 1
    assert completion.content == "".join(deltas)
    assert completion.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 1


@pytest.mark.parametrize(("coalesce_ms", "tokens_per_s", "most"), [(0, 100, None), (50, 2000, 3)])
async def test_a_fast_stream_is_read_in_windows(
    sim: SimServer,
    transport: httpx.AsyncBaseTransport,
    coalesce_ms: float,
    tokens_per_s: float,
    most: int | None,
) -> None:
    """At 2,000 tokens/s an answer of ~40 tokens arrives within one 50 ms
    window: coalesced, chatd's transport reads it in a few reads (one delta
    each). Not coalesced, a stream is read as it comes: many reads when its
    tokens come 10 ms apart (at 2,000 a second, how many depends on how busy
    the machine is). (httpx's own transport hands up one chunk per read
    whatever has arrived: coalescing only spaces its reads.)"""
    sim.set_timing(tokens_per_s=tokens_per_s)
    settings = LLMSettings(url=sim.base_url, coalesce_ms=coalesce_ms)
    async with open_llm_client(settings, transport=transport) as llm:
        events = await stream(llm, ask("hello there, nice day"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    completion = events[-1]
    assert isinstance(completion, Completion)
    assert completion.usage is not None and completion.usage.completion_tokens > 20
    assert "".join(d.text for d in deltas) == completion.content
    if most is None:
        assert len(deltas) > 3
    elif isinstance(transport, TrioTransport):
        assert len(deltas) <= most


async def test_tool_calls_stream_and_assemble(client: LLMClient) -> None:
    """Arithmetic and a time question call calculator and clock, arguments whole."""
    events = await stream(client, ask("what is 12*(3+4) and what time is it?", tools=TOOLS))
    begins = [e.name for e in events if isinstance(e, ToolCallBegin)]
    completion = events[-1]
    assert begins == ["calculator", "clock"]
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "tool_calls"
    calls = {c.name: orjson.loads(c.arguments) for c in completion.tool_calls}
    assert calls == {"calculator": {"expression": "12*(3+4)"}, "clock": {}}


async def test_tool_results_are_quoted(client: LLMClient) -> None:
    """After tool results, the answer quotes them verbatim."""
    messages = [
        {"role": "user", "content": "what is 2+2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "2+2 = 4"},
    ]
    events = await stream(client, ChatRequest(messages, tools=TOOLS))
    assert isinstance(events[-1], Completion)
    assert "2+2 = 4" in events[-1].content


async def test_complete_not_streamed(client: LLMClient) -> None:
    """complete() returns the same kind of answer without streaming."""
    with trio.fail_after(10):
        completion = await client.complete(ask("where is my order?", tools=TOOLS))
    assert [c.name for c in completion.tool_calls] == ["frequently_asked"]
    assert orjson.loads(completion.tool_calls[0].arguments) == {"question": "where is my order?"}


async def test_max_tokens_gives_length(client: LLMClient) -> None:
    """The simulator honours max_tokens and says so."""
    events = await stream(client, ask("hello there, nice day", max_tokens=3))
    assert isinstance(events[-1], Completion)
    assert events[-1].finish_reason == "length"


@pytest.mark.parametrize(("status", "error"), [(500, UpstreamHTTPError), (503, UpstreamRefused)])
async def test_error_status_keeps_body(
    sim: SimServer, client: LLMClient, status: int, error: type[Exception]
) -> None:
    """The simulator's error answers reach the caller with status and body."""
    sim.set_fault("error", status=status)
    with pytest.raises(error) as info:
        await stream(client, ask("hello"))
    assert info.value.status == status  # type: ignore[attr-defined]
    assert "error" in orjson.loads(info.value.body)  # type: ignore[attr-defined]


async def test_hang_times_out_and_disconnects(sim: SimServer, client: LLMClient) -> None:
    """A hung LLM trips the TTFT deadline, and the simulator sees us leave."""
    sim.set_fault("hang")
    with pytest.raises(UpstreamTimeout) as info:
        await stream(client, ask("hello"))
    assert info.value.phase == "ttft"
    await wait_for_disconnects(sim, 1)


async def test_slow_stream_trips_gap(sim: SimServer, client: LLMClient) -> None:
    """Tokens slower than the gap limit trip the gap deadline."""
    sim.set_fault("slow", ttft_ms=10, tokens_per_s=1)
    with pytest.raises(UpstreamTimeout) as info:
        await stream(client, ask("hello there, nice day"))
    assert info.value.phase == "gap"
    await wait_for_disconnects(sim, 1)


async def test_cut_stream_is_upstream_error(sim: SimServer, client: LLMClient) -> None:
    """A connection dropped mid-answer is an upstream error, not a hang or a crash."""
    sim.set_fault("cut", after_tokens=3)
    with pytest.raises(UpstreamProtocolError):
        await stream(client, ask("hello there, nice day"))


async def test_garbage_stream_is_upstream_error(sim: SimServer, client: LLMClient) -> None:
    """A chunk that is not JSON is a clear protocol error."""
    sim.set_fault("garbage")
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        await stream(client, ask("hello there, nice day"))


async def test_fault_cleared(sim: SimServer, client: LLMClient) -> None:
    """Mode ok restores normal answers."""
    sim.set_fault("error", status=500)
    sim.set_fault("ok")
    events = await stream(client, ask("hello"))
    assert isinstance(events[-1], Completion)


async def test_cancel_closes_upstream(sim: SimServer, client: LLMClient) -> None:
    """Cancelling mid-stream closes the connection: the simulator counts a disconnect."""
    sim.set_timing(ttft_ms=10, tokens_per_s=20)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with client.stream(ask("hello there, nice day")) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        scope.cancel()
        assert scope.cancelled_caught
    await wait_for_disconnects(sim, 1)
    stats = sim.statistics()
    assert stats.active == 0
    assert stats.completed == 0


async def until_completion(client: LLMClient, request: ChatRequest) -> Completion:
    """Stop reading at the completion, as the pipeline's answer call does."""
    with trio.fail_after(10):
        async with client.stream(request) as events:
            async for event in events:
                if isinstance(event, Completion):
                    return event
    raise AssertionError("no completion")


@pytest.mark.parametrize("how", ["all events", "until the completion", "complete()"])
async def test_a_finished_answer_leaves_its_connection_to_the_next_call(
    sim: SimServer, client: LLMClient, transport: httpx.AsyncBaseTransport, how: str
) -> None:
    """Three calls one after another: one connection, kept alive between them,
    also when the caller stops at the completion (the body's end is read then)."""
    for _ in range(3):
        if how == "all events":
            completion = (await stream(client, ask("hello there, nice day")))[-1]
        elif how == "until the completion":
            completion = await until_completion(client, ask("hello there, nice day"))
        else:
            with trio.fail_after(10):
                completion = await client.complete(ask("hello there, nice day"))
        assert isinstance(completion, Completion)
    if isinstance(transport, TrioTransport):
        (pool,) = transport.statistics().values()
        assert (pool.in_use, pool.idle) == (0, 1)


async def test_a_body_cut_in_the_middle_of_a_chunk_is_upstream_error(
    transport: httpx.AsyncBaseTransport,
) -> None:
    """A server that dies inside a chunk of the chunked body: a clear protocol error."""

    async def half_chunk(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            b'40\r\ndata: {"choices": [{"delta": {"content": "hi"}'
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, half_chunk, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        settings = LLMSettings(url=f"http://127.0.0.1:{port}/v1")
        async with open_llm_client(settings, transport=transport) as llm:
            with pytest.raises(UpstreamProtocolError, match="broke mid-stream"):
                await stream(llm, ask("hello"))
        nursery.cancel_scope.cancel()
