"""Pacing by due time, on trio's virtual clock, and the pre-encoded chunk templates."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from chatd.llm.sim import wire
from chatd.llm.sim.completions import (
    CompletionRequest,
    Fault,
    Timing,
    answer_completion,
    parse_completion_request,
)
from chatd.llm.sim.http import AbortConnection
from chatd.llm.sim.pacing import Pacer
from chatd.llm.sim.rules import TextPlan


class RecordingExchange:
    """Stands in for the HTTP exchange: records each write and when it happened."""

    def __init__(self, write_cost_s: float = 0.0) -> None:
        self.write_cost_s = write_cost_s
        self.writes: list[tuple[float, bytes]] = []
        self.client_gone = False
        self.status: int | None = None

    async def start_stream(self, status: int = 200, **_: Any) -> None:
        self.status = status

    async def send(self, data: bytes, *, end: bool = False) -> None:
        self.writes.append((trio.current_time(), data))
        await trio.sleep(self.write_cost_s)

    async def respond(self, status: int, body: bytes, **_: Any) -> None:
        self.status = status
        self.writes.append((trio.current_time(), body))

    def abort(self) -> None:
        raise AbortConnection


def request(stream: bool = True) -> CompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    return parse_completion_request(orjson.dumps(body))


PLAN = TextPlan("one two three four five")  # five tokens
TIMING = Timing(ttft_ms=100, tokens_per_s=10)


@pytest.fixture
async def pacer(nursery: trio.Nursery) -> Pacer:
    """A running pacer with the simulator's 1 ms tick."""
    clock = Pacer()
    await nursery.start(clock.run)
    return clock


async def answer(
    exchange: RecordingExchange,
    completion: CompletionRequest,
    pacer: Pacer,
    *,
    fault: Fault,
    arrived: float,
) -> bool:
    """Answer PLAN at TIMING through the recording exchange."""
    return await answer_completion(
        exchange,  # type: ignore[arg-type]
        completion,
        PLAN,
        timing=TIMING,
        fault=fault,
        arrived=arrived,
        pacer=pacer,
    )


def content_chunks(data: bytes) -> int:
    return data.count(b'"content":"') - data.count(b'"content":""')


async def test_first_token_at_ttft_then_one_write_per_token(
    autojump_clock: Any, pacer: Pacer
) -> None:
    """Token k is written at exactly ttft + k / rate, one write each, the last with [DONE]."""
    exchange = RecordingExchange()
    start = trio.current_time()
    done = await answer(exchange, request(), pacer, fault=Fault(), arrived=start)
    assert done
    times = [round(t - start, 9) for t, _ in exchange.writes]
    assert times == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [content_chunks(data) for _, data in exchange.writes] == [1, 1, 1, 1, 1]
    assert exchange.writes[-1][1].endswith(b"data: [DONE]\n\n")


async def test_a_late_writer_sends_every_due_token_at_once(
    autojump_clock: Any, pacer: Pacer
) -> None:
    """When writes lag, each wakeup sends all tokens already due in one write."""
    exchange = RecordingExchange(write_cost_s=0.25)
    start = trio.current_time()
    await answer(exchange, request(), pacer, fault=Fault(), arrived=start)
    times = [round(t - start, 9) for t, _ in exchange.writes]
    assert times == [0.1, 0.35, 0.6]
    assert [content_chunks(data) for _, data in exchange.writes] == [1, 2, 2]


async def test_non_streamed_answer_comes_when_the_last_token_is_due(
    autojump_clock: Any, pacer: Pacer
) -> None:
    """stream false answers once, at ttft plus the time of every token but the first."""
    exchange = RecordingExchange()
    start = trio.current_time()
    await answer(exchange, request(stream=False), pacer, fault=Fault(), arrived=start)
    [(at, body)] = exchange.writes
    assert round(at - start, 9) == 0.5
    assert orjson.loads(body)["choices"][0]["message"]["content"] == PLAN.text


async def test_cut_aborts_after_n_tokens(autojump_clock: Any, pacer: Pacer) -> None:
    """Mode cut writes N tokens then aborts, never the final chunk."""
    exchange = RecordingExchange()
    with pytest.raises(AbortConnection):
        await answer(
            exchange,
            request(),
            pacer,
            fault=Fault(mode="cut", after_tokens=2),
            arrived=trio.current_time(),
        )
    sent = b"".join(data for _, data in exchange.writes)
    assert content_chunks(sent) == 2
    assert b'finish_reason":"stop' not in sent
    assert b"[DONE]" not in sent


async def test_hang_waits_until_cancelled(autojump_clock: Any, pacer: Pacer) -> None:
    """Mode hang writes nothing, ever; only cancellation ends it."""
    exchange = RecordingExchange()
    with trio.move_on_after(3600) as scope:
        await answer(exchange, request(), pacer, fault=Fault(mode="hang"), arrived=0)
    assert scope.cancelled_caught
    assert exchange.writes == []


@given(st.text())
def test_content_template_encodes_any_token(token: str) -> None:
    """The byte template gives the same JSON as encoding the whole chunk."""
    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-1", created=7, model='m"odel', include_usage=False
    )
    event = orjson.loads(encoder.content(token).removeprefix(b"data: "))
    assert event == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": 'm"odel',
        "choices": [
            {"index": 0, "delta": {"content": token}, "logprobs": None, "finish_reason": None}
        ],
    }


@given(st.integers(min_value=0, max_value=64), st.text())
def test_arguments_template_encodes_any_piece(index: int, piece: str) -> None:
    """Argument pieces carry their call's index and the piece, and usage null when asked."""
    encoder = wire.ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
    event = orjson.loads(encoder.arguments(index, piece).removeprefix(b"data: "))
    assert event["choices"][0]["delta"] == {
        "tool_calls": [{"index": index, "function": {"arguments": piece}}]
    }
    assert event["usage"] is None
