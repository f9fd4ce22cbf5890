"""Route and answer: the first LLM call decides the path, the path streams.

- ``direct``: the router call answered in text; its stream is the answer.
- ``tool_stream`` (Path B): it called exactly one natural-answer tool, and
  that tool was confident; the tool streams its answer through a memory
  channel straight to the client, and no second LLM call is made.
- ``tools`` (Path A): otherwise the tools run side by side, each under its own
  timeout, failures reported to the LLM as tool errors, and a second LLM call
  streams the answer.

The path is decided by what the router streams first: text means ``direct``
(tool calls after text are ignored, as the text is already on its way); a
tool call means a tool path. ``route`` is sent once the path is final, so a
single natural-answer tool's ``tool_start``/``tool_end`` come before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs
import orjson
import structlog
import trio

from chatd.exceptions import UpstreamUnavailable
from chatd.llm import ChatRequest, Completion, Message, TextDelta, ToolCall, ToolCallBegin
from chatd.llm.types import estimate_tokens
from chatd.pipeline.events import ToolEnd, ToolStart
from chatd.pipeline.turn import ChatStreamer, Turn
from chatd.tools.base import Speculative, Tool, ToolResult
from chatd.tools.registry import ToolOutcome, ToolRegistry

__all__ = ["answer"]

log = structlog.get_logger("chatd.pipeline")


async def _stream_text(turn: Turn, llm: ChatStreamer, request: ChatRequest) -> Completion | None:
    """Stream the answer call's text to the client; return its completion."""
    completion: Completion | None = None
    seen = 0
    with turn.trace.span("answer") as span:
        try:
            async with llm.stream(request) as events:
                async for event in events:
                    span.mark()  # the call's time to first event: keeps the first
                    if isinstance(event, Completion):
                        turn.count(event)
                        span.set(finish_reason=event.finish_reason)
                        completion = event
                    elif isinstance(event, TextDelta):
                        seen += 1
                        await turn.say(event.text)
        finally:
            if completion is None:
                turn.count_cut_off(request.messages, seen)
    return completion


def _tool_messages(calls: Sequence[ToolCall], outcomes: Sequence[ToolOutcome]) -> list[Message]:
    """The assistant's tool calls and each tool's result, for the answer call."""
    assistant: Message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }
    results: list[Message] = [
        {
            "role": "tool",
            "tool_call_id": o.call_id,
            # Data for the LLM, not words for the user: it says what it will.
            "content": (
                o.result.content
                if o.ok and o.result
                else orjson.dumps({"error": o.error or "the tool failed"}).decode()
            ),
        }
        for o in outcomes
    ]
    return [assistant, *results]


@attrs.define
class _Tools:
    """Runs a turn's tools, telling the client as each starts and ends."""

    turn: Turn
    registry: ToolRegistry

    async def run(self, calls: Sequence[ToolCall]) -> list[ToolOutcome]:
        self.turn.on_state("tools")
        with self.turn.trace.span("tools", tools=",".join(c.name for c in calls)):
            return await self.registry.run_all(
                calls, self.turn.context, on_start=self._started, on_end=self._ended
            )

    async def _started(self, call: ToolCall, arguments: Mapping[str, Any]) -> None:
        await self.turn.send(ToolStart(call.id, call.name, arguments))

    async def _ended(self, outcome: ToolOutcome) -> None:
        self.turn.on_tool(outcome.tool, outcome.ok, outcome.duration_ms / 1000)
        trace = self.turn.trace
        now = trace.clock()
        trace.record(
            "tool",
            now - outcome.duration_ms / 1000,
            now,
            outcome="ok" if outcome.ok else "error",
            error=outcome.error,
            tool=outcome.tool,
        )
        await self.turn.send(
            ToolEnd(
                outcome.call_id, outcome.tool, outcome.ok, round(outcome.duration_ms), outcome.error
            )
        )

    def natural(self, outcome: ToolOutcome) -> _Natural | None:
        """Path B's answer, if ``outcome`` is a confident natural answer."""
        tool, result = self.registry.get(outcome.tool), outcome.result
        if tool is None or not tool.natural_answer or result is None or result.answer is None:
            return None
        return _Natural(tool, result)

    async def stream_answer(self, natural: _Natural) -> None:
        """Path B: stream the tool's answer to the client."""
        tool, result = natural
        await self.turn.route("tool_stream", [tool.name])
        send, receive = trio.open_memory_channel[str](0)
        with self.turn.trace.span("tool_stream", tool=tool.name):
            async with trio.open_nursery() as nursery:

                async def produce() -> None:
                    async with send:
                        await tool.stream(result, send)

                nursery.start_soon(produce)
                async with receive:
                    async for piece in receive:
                        await self.turn.token(piece)
                        # Honest usage: what the tool streamed counts as answer
                        # tokens, estimated (no model counted them).
                        self.turn.completion_tokens += estimate_tokens(piece)


class _Natural(NamedTuple):
    """A confident natural answer: the tool and its result."""

    tool: Tool
    result: ToolResult


def _early_call(
    registry: ToolRegistry, begun: ToolCallBegin, messages: Sequence[Message]
) -> ToolCall | None:
    """The call a natural-answer tool can make before the router finishes.

    Such a tool takes the user's question as asked (``speculative_arguments``),
    so it need not wait for the router to stream its arguments: a confident
    answer can start as soon as the router names the tool, which is what makes
    Path B's first token about one LLM time-to-first-token away.

    Not after earlier turns: a follow-up ("and how long does that take?")
    means what the history makes of it, which only the router's arguments
    say. (Nor, for the same reason, does an early answer that is not
    confident stand for a call whose arguments turn out different.)
    """
    tool = registry.get(begun.name)
    content = messages[-1].get("content") if messages else None
    if begun.index != 0 or not isinstance(tool, Speculative) or not tool.natural_answer:
        return None
    if any(m.get("role") == "user" for m in messages[:-1]):
        return None
    if not isinstance(content, str):
        return None
    arguments = tool.speculative_arguments(content)
    if arguments is None:
        return None
    return ToolCall(begun.id, begun.name, orjson.dumps(arguments).decode())


async def _answer_without_llm(
    turn: Turn,
    tools: _Tools,
    registry: ToolRegistry,
    messages: Sequence[Message],
    done_with_llm: Callable[[], None],
) -> bool:
    """Degraded Path B: the natural-answer tools, asked the user's message as
    typed, in turn; the first confident one streams its answer. ``False`` if
    none is confident (the request then fails as the LLM did)."""
    content = messages[-1].get("content") if messages else None
    if not isinstance(content, str):
        return False
    for name in registry.names:
        tool = registry.get(name)
        if not isinstance(tool, Speculative) or not tool.natural_answer:
            continue
        arguments = tool.speculative_arguments(content)
        if arguments is None:
            continue
        call = ToolCall(f"degraded_{name}", name, orjson.dumps(arguments).decode())
        (outcome,) = await tools.run([call])
        natural = tools.natural(outcome)
        if natural is not None:
            log.warning("LLM unavailable: answered from the knowledge base", tool=name)
            turn.degraded = True
            done_with_llm()
            await tools.stream_answer(natural)
            return True
    return False


def _same_call(guessed: ToolCall | None, call: ToolCall) -> bool:
    """Whether the router made the call that was guessed (arguments as JSON values)."""
    if guessed is None or guessed.id != call.id:
        return False
    try:
        return bool(orjson.loads(guessed.arguments) == orjson.loads(call.arguments))
    except orjson.JSONDecodeError:
        return False


def _keep() -> None:
    """The default for ``done_with_llm``: nothing to give back."""


async def answer(
    turn: Turn,
    llm: ChatStreamer,
    registry: ToolRegistry,
    messages: Sequence[Message],
    *,
    done_with_llm: Callable[[], None] = _keep,
) -> None:
    """Answer the prompt down whichever path the router picks. ``done_with_llm``
    is called once no more LLM calls will be made (Path B: the FAQ answers),
    so the caller can give back the LLM-stream slot it holds."""
    turn.on_state("routing")
    tools = _Tools(turn, registry)
    router = ChatRequest(list(messages), tools=registry.openai_tools())
    early: ToolOutcome | None = None
    guessed: ToolCall | None = None
    natural: _Natural | None = None
    completion: Completion | None = None
    seen = 0
    try:
        with turn.trace.span("router") as span:
            async with llm.stream(router) as events:
                async for event in events:
                    span.mark()  # the call's time to first event: keeps the first
                    seen += 1
                    if isinstance(event, TextDelta):
                        await turn.say(event.text)
                    elif isinstance(event, ToolCallBegin) and turn.path is None and early is None:
                        call = _early_call(registry, event, messages)
                        if call is not None:
                            guessed = call
                            (early,) = await tools.run([call])
                            natural = tools.natural(early)
                            if natural is not None:
                                # Leaving closes the router's stream: no more
                                # tokens paid, and no usage reported.
                                break
                    elif isinstance(event, Completion):
                        turn.count(event)
                        span.set(
                            finish_reason=event.finish_reason, tool_calls=len(event.tool_calls)
                        )
                        completion = event
    except UpstreamUnavailable:
        # The LLM is down (its breaker open, or unreachable) before it said
        # anything: a question the knowledge base answers confidently is
        # still answered, by it alone.
        if seen or turn.path is not None:
            raise
        if not await _answer_without_llm(turn, tools, registry, messages, done_with_llm):
            raise
        return
    finally:
        if completion is None:
            turn.count_cut_off(router.messages, seen)
    if natural is not None:
        done_with_llm()
        await tools.stream_answer(natural)
        return
    if completion is None or turn.path == "direct" or not completion.tool_calls:
        if turn.path is None:
            await turn.route("direct")
        if completion is not None:
            turn.finish_reason = completion.finish_reason
        return
    calls = completion.tool_calls
    if any(t.time_bound or t.user_bound for c in calls if (t := registry.get(c.name))):
        turn.shareable = False
        if turn.on_unshareable is not None:
            turn.on_unshareable()
    # The early call stands for the router's first call (same id, same
    # arguments); the rest run now.
    done = [early] if early is not None and _same_call(guessed, calls[0]) else []
    tool = registry.get(calls[0].name)
    if not done and len(calls) == 1 and tool is not None and tool.natural_answer:
        done = await tools.run(calls)
        natural = tools.natural(done[0])
        if natural is not None:
            done_with_llm()
            await tools.stream_answer(natural)
            return
    await turn.route("tools", [c.name for c in calls])
    outcomes = [*done, *await tools.run(calls[len(done) :])] if calls[len(done) :] else done
    failed = [o.tool for o in outcomes if not o.ok]
    if failed:
        log.info("tools failed", tools=failed)
    followup = ChatRequest([*messages, *_tool_messages(calls, outcomes)])
    final = await _stream_text(turn, llm, followup)
    if final is not None:
        turn.finish_reason = final.finish_reason if final.finish_reason == "length" else "stop"
