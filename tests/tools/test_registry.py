"""The tool registry: every failure becomes an outcome, cancellation still propagates."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import pytest
import structlog
import trio
import trio.testing

from chatd.exceptions import ToolFailed
from chatd.llm.types import ToolCall
from chatd.tools import Tool, ToolContext, ToolOutcome, ToolRegistry, ToolResult, stream_text

Behaviour = Callable[[Mapping[str, Any]], Awaitable[ToolResult]]
CONTEXT = ToolContext(request_id="req-1")
SCHEMA = {
    "type": "object",
    "properties": {"seconds": {"type": "number"}, "text": {"type": "string"}},
    "additionalProperties": False,
}


async def sleep_then_echo(arguments: Mapping[str, Any]) -> ToolResult:
    await trio.sleep(arguments.get("seconds", 0))
    return ToolResult(content=f"slept {arguments.get('seconds', 0)}")


@attrs.frozen
class FakeTool:
    """A tool whose ``execute`` is whatever the test says."""

    name: str
    behaviour: Behaviour = sleep_then_echo
    timeout_s: float | None = None
    description: str = "a fake tool"
    parameters: Mapping[str, Any] = SCHEMA
    natural_answer: bool = False
    time_bound: bool = False
    user_bound: bool = False

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        return await self.behaviour(arguments)

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        await stream_text(result.content, send)


def call(name: str, arguments: str = "{}", call_id: str = "call-1") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def registry(*tools: Tool, default_timeout_s: float = 10.0) -> ToolRegistry:
    return ToolRegistry(tools, default_timeout_s=default_timeout_s)


async def test_a_good_call_returns_the_result_and_parsed_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A known tool with valid arguments runs and its result comes back ok."""
    outcome = await registry(FakeTool("echo")).run(call("echo", '{"seconds": 0}'), CONTEXT)
    assert outcome == ToolOutcome(
        call_id="call-1",
        tool="echo",
        arguments={"seconds": 0},
        ok=True,
        result=ToolResult(content="slept 0"),
        error=None,
        duration_ms=0.0,
    )
    assert outcome.content == "slept 0"


async def test_empty_arguments_mean_no_arguments() -> None:
    """Some servers send "" for a call without arguments; it is taken as {}."""
    outcome = await registry(FakeTool("echo")).run(call("echo", "  "), CONTEXT)
    assert outcome.ok and outcome.arguments == {}


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("nope", "{}", "unknown tool 'nope'"),
        ("echo", '{"seconds": ', "arguments are not valid JSON ("),
        ("echo", "NaN", "arguments are not valid JSON ("),
        ("echo", "[1, 2]", "arguments must be a JSON object, got an array"),
        ("echo", '"hi"', "arguments must be a JSON object, got a string"),
        ("echo", "3", "arguments must be a JSON object, got a number"),
        ("echo", "null", "arguments must be a JSON object, got null"),
        ("echo", '{"seconds": "1"}', 'bad arguments: $.seconds: expected a number, got "1"'),
        (
            "echo",
            '{"seconds": true, "x": 1}',
            "bad arguments: $.seconds: expected a number, got true; $.x: unexpected property",
        ),
    ],
)
async def test_bad_calls_become_failed_outcomes(name: str, arguments: str, error: str) -> None:
    """Unknown tools, broken JSON, non-objects and schema problems are ok=False, not raised."""
    outcome = await registry(FakeTool("echo")).run(call(name, arguments), CONTEXT)
    assert not outcome.ok and outcome.result is None
    assert outcome.error is not None and outcome.error.startswith(error)
    assert outcome.content == f"Error: {outcome.error}"


async def test_bad_arguments_keep_what_parsed() -> None:
    """An outcome carries the parsed arguments even when they break the schema."""
    outcome = await registry(FakeTool("echo")).run(call("echo", '{"seconds": "1"}'), CONTEXT)
    assert outcome.arguments == {"seconds": "1"}


async def test_tool_failed_becomes_its_message() -> None:
    """ToolFailed is the tool's way to fail in words; the words are the error."""

    async def fail(arguments: Mapping[str, Any]) -> ToolResult:
        raise ToolFailed("the moon is not reachable")

    outcome = await registry(FakeTool("moon", fail)).run(call("moon"), CONTEXT)
    assert not outcome.ok and outcome.error == "the moon is not reachable"


async def test_tool_failed_inside_the_tools_own_nursery_is_still_its_message() -> None:
    """A ToolFailed that a nursery in the tool wrapped in a group is unwrapped."""

    async def fail_in_child(arguments: Mapping[str, Any]) -> ToolResult:
        async def child() -> None:
            raise ToolFailed("child failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        return ToolResult(content="unreachable")

    outcome = await registry(FakeTool("kids", fail_in_child)).run(call("kids"), CONTEXT)
    assert outcome.error == "child failed"


async def test_a_buggy_tool_is_logged_and_the_request_goes_on() -> None:
    """A tool raising KeyError is an internal error in the outcome and a logged traceback."""

    async def buggy(arguments: Mapping[str, Any]) -> ToolResult:
        return ToolResult(content={}["missing"])

    tools = registry(FakeTool("buggy", buggy), FakeTool("echo"))
    with structlog.testing.capture_logs() as logs:
        outcomes = await tools.run_all(
            [call("buggy", call_id="a"), call("echo", call_id="b")], CONTEXT
        )
    assert [o.ok for o in outcomes] == [False, True]
    assert outcomes[0].error == "internal error in tool 'buggy'"
    [entry] = logs
    assert entry["event"] == "tool_crashed" and entry["log_level"] == "error"
    assert entry["tool"] == "buggy" and entry["call_id"] == "a"
    assert entry["request_id"] == "req-1" and entry["exc_info"] is True


async def test_a_tool_returning_garbage_is_an_internal_error() -> None:
    """A tool that returns something other than a ToolResult is reported, not trusted."""

    async def garbage(arguments: Mapping[str, Any]) -> Any:
        return "just a string"

    with structlog.testing.capture_logs() as logs:
        outcome = await registry(FakeTool("junk", garbage)).run(call("junk"), CONTEXT)
    assert outcome.error == "internal error in tool 'junk'"
    assert logs[0]["event"] == "tool_bad_result"


async def test_a_tool_with_an_unreadable_schema_is_an_internal_error() -> None:
    """A schema that validation cannot read is the tool's bug: reported, logged, not raised."""
    broken = FakeTool("broken", parameters={"type": "object", "required": 5})
    with structlog.testing.capture_logs() as logs:
        outcome = await registry(broken).run(call("broken"), CONTEXT)
    assert outcome.error == "internal error in tool 'broken'"
    assert logs[0]["event"] == "tool_crashed"


async def test_timeout_uses_the_default_at_the_exact_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tool without its own limit is stopped at default_timeout_s, to the tick."""
    start = trio.current_time()
    tools = registry(FakeTool("slow"), default_timeout_s=2.5)
    outcome = await tools.run(call("slow", '{"seconds": 100}'), CONTEXT)
    assert trio.current_time() - start == 2.5
    assert not outcome.ok and outcome.error == "timed out after 2.5 s"
    assert outcome.duration_ms == 2500.0


async def test_a_tools_own_timeout_wins(autojump_clock: trio.testing.MockClock) -> None:
    """A tool's timeout_s replaces the registry's default, shorter or longer."""
    start = trio.current_time()
    tools = registry(FakeTool("slow", timeout_s=20), default_timeout_s=1)
    outcome = await tools.run(call("slow", '{"seconds": 15}'), CONTEXT)
    assert outcome.ok and trio.current_time() - start == 15
    outcome = await tools.run(call("slow", '{"seconds": 25}'), CONTEXT)
    assert outcome.error == "timed out after 20 s" and trio.current_time() - start == 35


async def test_run_all_runs_calls_side_by_side(autojump_clock: trio.testing.MockClock) -> None:
    """Two one-second tools finish together after one second, not two."""
    start = trio.current_time()
    tools = registry(FakeTool("a"), FakeTool("b"))
    outcomes = await tools.run_all(
        [call("a", '{"seconds": 1}', "1"), call("b", '{"seconds": 1}', "2")], CONTEXT
    )
    assert trio.current_time() - start == 1.0
    assert [o.ok for o in outcomes] == [True, True]
    assert [o.duration_ms for o in outcomes] == [1000.0, 1000.0]


async def test_run_all_keeps_call_order_and_calls_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Outcomes follow the calls' order; callbacks fire as each call starts and ends."""
    events: list[tuple[str, str, Any]] = []

    async def on_start(tool_call: ToolCall, arguments: dict[str, Any]) -> None:
        events.append(("start", tool_call.id, arguments))

    async def on_end(outcome: ToolOutcome) -> None:
        events.append(("end", outcome.call_id, outcome.ok))

    tools = registry(FakeTool("echo"), default_timeout_s=3)
    calls = [
        call("echo", '{"seconds": 2}', "slow"),
        call("echo", '{"seconds": 1}', "fast"),
        call("echo", "not json", "broken"),
        call("missing", "{}", "unknown"),
        call("echo", '{"seconds": 5}', "too-slow"),
    ]
    outcomes = await tools.run_all(calls, CONTEXT, on_start=on_start, on_end=on_end)

    assert [o.call_id for o in outcomes] == ["slow", "fast", "broken", "unknown", "too-slow"]
    assert [o.ok for o in outcomes] == [True, True, False, False, False]
    starts = [e for e in events if e[0] == "start"]
    ends = [e[1] for e in events if e[0] == "end"]
    assert sorted(starts) == sorted(
        [
            ("start", "slow", {"seconds": 2}),
            ("start", "fast", {"seconds": 1}),
            ("start", "broken", {}),
            ("start", "unknown", {}),
            ("start", "too-slow", {"seconds": 5}),
        ]
    )
    assert set(ends[:2]) == {"broken", "unknown"}
    assert ends[2:] == ["fast", "slow", "too-slow"]
    assert events.index(("end", "fast", True)) > max(events.index(s) for s in starts)


async def test_run_all_of_nothing_is_nothing() -> None:
    """No calls, no outcomes."""
    assert await registry(FakeTool("echo")).run_all([], CONTEXT) == []


async def test_cancellation_propagates_out_of_run(autojump_clock: trio.testing.MockClock) -> None:
    """A cancelled outer scope stops the tool, and run does not turn it into an outcome."""
    finished: list[bool] = []

    async def slow(arguments: Mapping[str, Any]) -> ToolResult:
        await trio.sleep(5)
        finished.append(True)
        return ToolResult(content="done")

    outcome = None
    start = trio.current_time()
    with trio.move_on_after(1) as scope:
        outcome = await registry(FakeTool("slow", slow)).run(call("slow"), CONTEXT)
    assert scope.cancelled_caught and outcome is None and finished == []
    assert trio.current_time() - start == 1


async def test_cancellation_through_a_tools_nursery_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled wrapped in an exception group by the tool's nursery is not swallowed either."""
    children_done: list[bool] = []

    async def fan_out(arguments: Mapping[str, Any]) -> ToolResult:
        async def child() -> None:
            await trio.sleep(5)
            children_done.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            nursery.start_soon(child)
        return ToolResult(content="done")

    outcomes = None
    tools = registry(FakeTool("fan", fan_out), FakeTool("echo"))
    with trio.move_on_after(1) as scope:
        outcomes = await tools.run_all(
            [call("fan", call_id="a"), call("echo", '{"seconds": 3}', "b")], CONTEXT
        )
    assert scope.cancelled_caught and outcomes is None and children_done == []


async def test_a_failing_callback_propagates_and_cancels_the_other_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A callback's own error is the caller's, not a tool's: it propagates."""

    async def on_end(outcome: ToolOutcome) -> None:
        raise RuntimeError("client gone")

    start = trio.current_time()
    tools = registry(FakeTool("echo"))
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="client gone")):
        await tools.run_all(
            [call("echo", '{"seconds": 1}', "a"), call("echo", '{"seconds": 9}', "b")],
            CONTEXT,
            on_end=on_end,
        )
    assert trio.current_time() - start == 1


def test_duplicate_names_are_refused() -> None:
    """Two tools with one name would make calls ambiguous."""
    with pytest.raises(ValueError, match="two tools are named 'echo'"):
        registry(FakeTool("echo"), FakeTool("other"), FakeTool("echo"))


def test_default_timeout_must_be_positive() -> None:
    """A zero default timeout is a configuration mistake."""
    with pytest.raises(ValueError, match="default_timeout_s"):
        registry(FakeTool("echo"), default_timeout_s=0)


def test_lookup_and_openai_tools() -> None:
    """Tools are found by name and offered in OpenAI's function shape, in the order asked."""
    a, b = FakeTool("a", description="tool a"), FakeTool("b")
    tools = registry(a, b)
    assert tools.names == ("a", "b") and len(tools) == 2
    assert tools.get("a") is a and tools.get("c") is None
    assert "b" in tools and "c" not in tools
    assert tools.openai_tools() == [
        {"type": "function", "function": {"name": n, "description": d, "parameters": SCHEMA}}
        for n, d in [("a", "tool a"), ("b", "a fake tool")]
    ]
    assert [t["function"]["name"] for t in tools.openai_tools(["b", "a"])] == ["b", "a"]
    assert tools.openai_tools([]) == []
    with pytest.raises(KeyError):
        tools.openai_tools(["c"])
