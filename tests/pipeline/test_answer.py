"""Answer paths on trio's virtual clock, with a scripted LLM: what each path
holds while it streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from chatd.exceptions import ToolFailed, UpstreamUnavailable
from chatd.llm import ChatEvent, ChatRequest, Completion, TextDelta, ToolCall, ToolCallBegin
from chatd.llm.types import Usage, estimate_prompt_tokens
from chatd.pipeline.answer import answer
from chatd.pipeline.events import Event, Token, ToolEnd
from chatd.pipeline.turn import Turn
from chatd.tools.base import ToolContext, ToolResult
from chatd.tools.registry import ToolRegistry

QUESTION = [{"role": "user", "content": "how long does shipping take?"}]


@attrs.define
class ScriptedLLM:
    """Each call streams its script, one event a second; counts open streams."""

    scripts: list[Sequence[ChatEvent]]
    open: int = 0
    calls: int = 0
    requests: list[ChatRequest] = attrs.field(factory=list)
    fail: Exception | None = None
    """Raised by every call before its first event (an LLM that is down)."""

    @property
    def model(self) -> str:
        return "scripted"

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[ChatEvent]]:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
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
    from chatd.pipeline.turn import AnswerTooLong

    pieces = [TextDelta("word " * 10)] * 100  # 5,000 characters
    llm = ScriptedLLM([[*pieces, Completion("", (), "stop")]])
    events: list[Event] = []

    async def send(event: Event) -> None:
        events.append(event)

    turn = Turn(send, ToolContext("r1"), max_chars=1_000)
    with pytest.raises(AnswerTooLong):
        await answer(turn, llm, ToolRegistry([]), QUESTION)
    assert len(_text(events)) <= 1_000 and llm.open == 0
    # No usage came: the prompt, estimated, and a token for each chunk received
    # (20 sent, the 21st past the limit).
    assert (turn.prompt_tokens, turn.completion_tokens) == (estimate_prompt_tokens(QUESTION), 21)

    faq = SlowFAQ(llm, [False])
    turn = Turn(send, ToolContext("r2"), max_chars=5)
    llm.scripts.append([ToolCallBegin(0, "c1", "slow_faq"), Completion("", (), "tool_calls")])
    with pytest.raises(BaseExceptionGroup) as info:
        await answer(turn, llm, ToolRegistry([faq]), QUESTION)
    assert info.group_contains(AnswerTooLong)


# --- each path, each error, cancellation --------------------------------------------------


@attrs.define
class Adder:
    """A plain tool: adds two numbers, or fails in words for anything else."""

    name: str = "adder"
    description: str = "adds a and b"
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        }
    )
    natural_answer: bool = False
    time_bound: bool = False
    user_bound: bool = False
    timeout_s: float | None = None

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        if arguments["b"] == 0 and arguments["a"] == 0:
            raise ToolFailed("nothing to add")
        return ToolResult(str(arguments["a"] + arguments["b"]))


def recorder() -> tuple[list[Event], Turn]:
    events: list[Event] = []

    async def send(event: Event) -> None:
        events.append(event)

    return events, Turn(send, ToolContext("r1"))


def kinds(events: list[Event]) -> list[str]:
    merged = [type(e).__name__ for e in events]
    return [k for i, k in enumerate(merged) if k != "Token" or merged[i - 1 : i] != ["Token"]]


async def test_direct_streams_the_routers_own_text(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM([[TextDelta("Hello"), TextDelta(" there"), Completion("", (), "length")]])
    events, turn = recorder()
    await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert turn.path == "direct" and turn.finish_reason == "length"
    assert _text(events) == "Hello there" and kinds(events) == ["Route", "Token"]
    assert llm.calls == 1 and llm.open == 0


async def test_usage_is_the_llms_or_else_what_streamed(autojump_clock: trio.abc.Clock) -> None:
    """A call that ends reports its usage, counted once; a call cancelled part
    way counts its prompt, estimated, and a token for each chunk it streamed."""
    script = [
        TextDelta("It"),
        TextDelta(" is"),
        TextDelta(" 5."),
        Completion("", (), "stop", Usage(7, 3)),
    ]
    llm = ScriptedLLM([script, script])
    _, turn = recorder()
    await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert (turn.prompt_tokens, turn.completion_tokens) == (7, 3)

    _, turn = recorder()
    with trio.move_on_after(2.5):  # two chunks in
        await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert (turn.prompt_tokens, turn.completion_tokens) == (estimate_prompt_tokens(QUESTION), 2)


async def test_path_a_runs_the_tools_then_a_second_call_with_their_results(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = (
        ToolCall("c1", "adder", '{"a": 2, "b": 3}'),
        ToolCall("c2", "adder", '{"a": 0, "b": 0}'),
    )
    llm = ScriptedLLM(
        [
            [ToolCallBegin(0, "c1", "adder"), Completion("", calls, "tool_calls")],
            [TextDelta("It is 5."), Completion("It is 5.", (), "stop")],
        ]
    )
    events, turn = recorder()
    await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert turn.path == "tools" and turn.tools_used == ("adder", "adder")
    order = kinds(events)  # the tools run side by side: their events interleave
    assert order[0] == "Route" and order[-1] == "Token"
    assert sorted(order[1:-1]) == ["ToolEnd", "ToolEnd", "ToolStart", "ToolStart"]
    ends = [e for e in events if isinstance(e, ToolEnd)]
    assert sorted(e.ok for e in ends) == [False, True]
    assert _text(events) == "It is 5."
    results = [m for m in llm.requests[1].messages if m.get("role") == "tool"]
    assert [m["content"] for m in results] == ["5", '{"error":"nothing to add"}']
    assert llm.calls == 2 and llm.open == 0


async def test_an_unsure_natural_answer_goes_down_path_a(autojump_clock: trio.abc.Clock) -> None:
    """A natural-answer tool without a confident answer: the LLM answers from its result."""

    @attrs.define
    class Unsure(SlowFAQ):
        async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
            return ToolResult('{"answer": null, "candidates": []}')

    call = ToolCall("c1", "slow_faq", '{"question": "how long does shipping take?"}')
    llm = ScriptedLLM(
        [
            [ToolCallBegin(0, "c1", "slow_faq"), Completion("", (call,), "tool_calls")],
            [TextDelta("Not sure."), Completion("Not sure.", (), "stop")],
        ]
    )
    events, turn = recorder()
    await answer(turn, llm, ToolRegistry([Unsure(llm, [False])]), QUESTION)
    assert turn.path == "tools" and _text(events) == "Not sure." and llm.calls == 2
    assert [type(e).__name__ for e in events].count("ToolStart") == 1  # the early call stood


async def test_with_the_llm_down_a_confident_natural_answer_still_comes(
    autojump_clock: trio.abc.Clock,
) -> None:
    llm = ScriptedLLM([], fail=UpstreamUnavailable("cannot reach the LLM"))
    released = [False]
    events, turn = recorder()
    await answer(
        turn,
        llm,
        ToolRegistry([SlowFAQ(llm, released)]),
        QUESTION,
        done_with_llm=lambda: released.__setitem__(0, True),
    )
    assert turn.path == "tool_stream" and turn.degraded and released == [True]
    assert _text(events) == "three to five days "


async def test_with_the_llm_down_anything_else_fails_as_it_did(
    autojump_clock: trio.abc.Clock,
) -> None:
    llm = ScriptedLLM([], fail=UpstreamUnavailable("cannot reach the LLM"))
    events, turn = recorder()
    with pytest.raises(UpstreamUnavailable):
        await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert events == [] and not turn.degraded


@pytest.mark.parametrize("after_s", [0.5, 1.5, 2.5])
async def test_a_cancel_at_any_stage_closes_every_stream(
    autojump_clock: trio.abc.Clock, after_s: float
) -> None:
    """Cancelled while the router streams (0.5 s), while the tools run or the
    answer call starts (1.5 s), or while the answer streams (2.5 s): nothing
    is left open, and nothing more is sent."""
    call = ToolCall("c1", "adder", '{"a": 2, "b": 3}')
    llm = ScriptedLLM(
        [
            [ToolCallBegin(0, "c1", "adder"), Completion("", (call,), "tool_calls")],
            [TextDelta("It"), TextDelta(" is"), TextDelta(" 5."), Completion("", (), "stop")],
        ]
    )
    events, turn = recorder()
    with trio.move_on_after(after_s) as scope:
        await answer(turn, llm, ToolRegistry([Adder()]), QUESTION)
    assert scope.cancelled_caught and llm.open == 0
    sent = len(events)
    await trio.sleep(10)
    assert len(events) == sent
