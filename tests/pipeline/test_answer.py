"""Answer paths on trio's virtual clock, with a scripted LLM: what each path
holds while it streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from chatd.llm import ChatEvent, ChatRequest, Completion, TextDelta, ToolCall, ToolCallBegin
from chatd.pipeline.answer import Turn, answer
from chatd.pipeline.events import Event, Token
from chatd.tools.base import ToolContext, ToolResult
from chatd.tools.registry import ToolRegistry

QUESTION = [{"role": "user", "content": "how long does shipping take?"}]


@attrs.define
class ScriptedLLM:
    """Each call streams its script, one event a second; counts open streams."""

    scripts: list[Sequence[ChatEvent]]
    open: int = 0
    calls: int = 0

    @property
    def model(self) -> str:
        return "scripted"

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[ChatEvent]]:
        script = self.scripts[self.calls]
        self.calls += 1
        self.open += 1
        try:
            yield _Paced(iter(script))
        finally:
            self.open -= 1


@attrs.define
class _Paced:
    events: Any

    def __aiter__(self) -> _Paced:
        return self

    async def __anext__(self) -> ChatEvent:
        await trio.sleep(1)
        try:
            return next(self.events)  # type: ignore[no-any-return]
        except StopIteration:
            raise StopAsyncIteration from None


@attrs.define
class SlowFAQ:
    """A natural-answer tool whose answer streams one word a second; notes
    what was still held as each word went."""

    llm: ScriptedLLM
    released: list[bool]
    held_while_streaming: list[tuple[int, bool]] = attrs.field(factory=list)
    name: str = "slow_faq"
    description: str = "answers from a slow FAQ"
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {"question": {"type": "string"}}}
    )
    natural_answer: bool = True
    time_bound: bool = False
    user_bound: bool = False
    timeout_s: float | None = None

    def speculative_arguments(self, message: str) -> Mapping[str, Any]:
        return {"question": message}

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult("three to five days", answer="three to five days")

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        for word in (result.answer or "").split():
            await trio.sleep(1)
            self.held_while_streaming.append((self.llm.open, self.released[0]))
            await send.send(word + " ")


async def run(script: Sequence[ChatEvent]) -> tuple[ScriptedLLM, SlowFAQ, list[Event]]:
    llm = ScriptedLLM([script, [TextDelta("never"), Completion("never", (), "stop")]])
    released = [False]
    faq = SlowFAQ(llm, released)
    events: list[Event] = []

    async def send(event: Event) -> None:
        events.append(event)

    def done_with_llm() -> None:
        released[0] = True

    turn = Turn(send, ToolContext("r1"))
    await answer(turn, llm, ToolRegistry([faq]), QUESTION, done_with_llm=done_with_llm)
    assert turn.path == "tool_stream"
    return llm, faq, events


def _text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


async def test_path_b_early_closes_the_router_before_streaming(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Named early, the FAQ answers while no LLM stream is open and the
    LLM-stream slot is back; the router's rest is never read."""
    arguments = '{"question": "how long does shipping take?"}'
    call = ToolCall("c1", "slow_faq", arguments)
    llm, faq, events = await run(
        [ToolCallBegin(0, "c1", "slow_faq"), Completion("", (call,), "tool_calls")]
    )
    assert faq.held_while_streaming == [(0, True)] * 4
    assert _text(events) == "three to five days "
    assert llm.calls == 1


async def test_path_b_after_the_router_gives_the_slot_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Known only from the router's completion (no early call), Path B still
    streams with the slot given back and no second call."""
    call = ToolCall("c1", "slow_faq", '{"question": "shipping?"}')
    llm, faq, events = await run([Completion("", (call,), "tool_calls")])
    assert _text(events) == "three to five days "
    assert faq.held_while_streaming == [(0, True)] * 4
    assert llm.calls == 1


async def test_an_answer_is_cut_at_its_limit(autojump_clock: trio.abc.Clock) -> None:
    """Past the turn's max_chars the answer stops (AnswerTooLong), its stream
    closed, with no more than the limit sent; Path B's stream too."""
    from chatd.pipeline.answer import AnswerTooLong

    pieces = [TextDelta("word " * 10)] * 100  # 5,000 characters
    llm = ScriptedLLM([[*pieces, Completion("", (), "stop")]])
    events: list[Event] = []

    async def send(event: Event) -> None:
        events.append(event)

    turn = Turn(send, ToolContext("r1"), max_chars=1_000)
    with pytest.raises(AnswerTooLong):
        await answer(turn, llm, ToolRegistry([]), QUESTION)
    assert len(_text(events)) <= 1_000 and llm.open == 0

    faq = SlowFAQ(llm, [False])
    turn = Turn(send, ToolContext("r2"), max_chars=5)
    llm.scripts.append([ToolCallBegin(0, "c1", "slow_faq"), Completion("", (), "tool_calls")])
    with pytest.raises(BaseExceptionGroup) as info:
        await answer(turn, llm, ToolRegistry([faq]), QUESTION)
    assert info.group_contains(AnswerTooLong)
