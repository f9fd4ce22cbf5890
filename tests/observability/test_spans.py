"""Request spans on trio's virtual clock: parents, outcomes, exact offsets, the summary."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
import trio

from chatd.observability.spans import ROOT_SPAN_ID, RequestTrace, SpanHandle

Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def spans(logs: Logs) -> dict[str, MutableMapping[str, Any]]:
    """Span lines by span name (names are unique in these tests)."""
    return {line["span"]: line for line in logs if line["event"] == "span"}


def summary(logs: Logs) -> MutableMapping[str, Any]:
    (line,) = [line for line in logs if line["event"] == "request summary"]
    return line


async def test_span_around_sleep_lasts_exactly_that(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """A span around ``await trio.sleep(1.5)`` logs one line with duration_ms 1500."""
    trace = RequestTrace("req_1")
    await trio.sleep(0.25)
    with trace.span("router", model="sim"):
        await trio.sleep(1.5)
    assert logs == [
        {
            "event": "span",
            "log_level": "info",
            "request_id": "req_1",
            "span": "router",
            "span_id": 1,
            "parent_id": ROOT_SPAN_ID,
            "start": 250.0,
            "duration_ms": 1500.0,
            "outcome": "ok",
            "model": "sim",
        }
    ]


async def test_nested_spans_name_their_parent(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """The innermost open span of the same task is the parent; offsets are from the start."""
    trace = RequestTrace("req_1")
    with trace.span("outer") as outer:
        await trio.sleep(1)
        with trace.span("inner") as inner:
            inner.set(tokens=3)
            await trio.sleep(0.5)
        with trace.span("after"):
            pass
    lines = spans(logs)
    assert [line["span"] for line in logs] == ["inner", "after", "outer"]
    assert lines["outer"]["parent_id"] == ROOT_SPAN_ID
    assert lines["inner"]["parent_id"] == lines["after"]["parent_id"] == outer.span_id
    assert (lines["inner"]["start"], lines["inner"]["duration_ms"]) == (1000.0, 500.0)
    assert lines["inner"]["tokens"] == 3
    assert lines["outer"]["duration_ms"] == 1500.0
    assert len({outer.span_id, inner.span_id, lines["after"]["span_id"]}) == 3


async def test_concurrent_spans_in_a_nursery_get_the_request_as_parent(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """Tools side by side: each tool's span has the request for parent, never a
    sibling's span, and a span inside a tool's task has that tool's span."""
    trace = RequestTrace("req_1")

    async def tool(name: str, delay: float, length: float) -> None:
        await trio.sleep(delay)
        with trace.span(name):
            await trio.sleep(length)
            with trace.span(f"{name} call"):
                await trio.sleep(length)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tool, "calculator", 0, 1)
        nursery.start_soon(tool, "faq", 0.5, 1)
    lines = spans(logs)
    assert lines["calculator"]["parent_id"] == lines["faq"]["parent_id"] == ROOT_SPAN_ID
    assert lines["calculator call"]["parent_id"] == lines["calculator"]["span_id"]
    assert lines["faq call"]["parent_id"] == lines["faq"]["span_id"]
    assert (lines["faq"]["start"], lines["faq"]["duration_ms"]) == (500.0, 2000.0)


async def test_tasks_inherit_the_span_their_parent_task_has_open(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """Tools started inside a ``tools`` span are its children, however they interleave."""
    trace = RequestTrace("req_1")

    async def tool(name: str) -> None:
        with trace.span(name):
            await trio.sleep(1)

    with trace.span("tools") as tools:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tool, "a")
            nursery.start_soon(tool, "b")
    lines = spans(logs)
    assert lines["a"]["parent_id"] == lines["b"]["parent_id"] == tools.span_id


async def test_explicit_parent_wins(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """``parent=`` overrides the stack; ``trace.root`` makes a top-level span."""
    trace = RequestTrace("req_1")
    with trace.span("flight") as flight, trace.span("queue wait", parent=trace.root):
        pass
    trace.record("router", trace.started, trace.started + 1, parent=flight)
    lines = spans(logs)
    assert lines["queue wait"]["parent_id"] == ROOT_SPAN_ID
    assert lines["router"]["parent_id"] == flight.span_id


async def test_work_in_another_nursery_runs_under_a_span_of_the_request(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """A flight's task is not the request's child: ``under(flight)`` places its spans,
    and those of the tasks it starts, below the request's ``flight`` span."""
    trace = RequestTrace("req_1")

    async def tool() -> None:
        with trace.span("tool"):
            await trio.sleep(1)

    async def fly(parent: SpanHandle) -> None:
        with trace.under(parent):
            with trace.span("router"):
                await trio.sleep(1)
            async with trio.open_nursery() as tools:
                tools.start_soon(tool)
        with trace.span("after"):
            pass

    async def request(server_owned: trio.Nursery) -> None:
        with trace.span("flight") as flight:
            server_owned.start_soon(fly, flight)
            await trio.sleep(3)

    async with trio.open_nursery() as server_owned:
        server_owned.start_soon(request, server_owned)
    lines = spans(logs)
    assert lines["router"]["parent_id"] == lines["tool"]["parent_id"] == lines["flight"]["span_id"]
    assert lines["after"]["parent_id"] == ROOT_SPAN_ID
    assert lines["tool"]["start"] == 1000.0


async def test_an_exception_is_an_error_outcome(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """The exception propagates; the span says ``error`` with its class and message."""
    trace = RequestTrace("req_1")
    with pytest.raises(ValueError, match="boom"), trace.span("router"):
        await trio.sleep(2)
        raise ValueError("boom")
    line = spans(logs)["router"]
    assert (line["outcome"], line["error"], line["duration_ms"]) == (
        "error",
        "ValueError: boom",
        2000.0,
    )


async def test_a_cancel_scope_is_a_cancelled_outcome(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """A real cancel scope: the span is ``cancelled``, with no error, for its time."""
    trace = RequestTrace("req_1")
    with trio.move_on_after(3) as scope, trace.span("answer"):
        await trio.sleep_forever()
    assert scope.cancelled_caught
    line = spans(logs)["answer"]
    assert (line["outcome"], line["duration_ms"]) == ("cancelled", 3000.0)
    assert "error" not in line


async def test_a_group_of_only_cancelled_is_cancelled(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """A nursery cancelled from outside raises a group of Cancelled: still ``cancelled``;
    a group holding a real error as well is that ``error``."""
    trace = RequestTrace("req_1")

    async def fails_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise KeyError("cleanup")

    with trio.move_on_after(1), trace.span("tools"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
    with pytest.raises(BaseExceptionGroup), trio.move_on_after(1), trace.span("broken"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_on_cancel)
    lines = spans(logs)
    assert lines["tools"]["outcome"] == "cancelled"
    assert (lines["broken"]["outcome"], lines["broken"]["error"]) == (
        "error",
        "KeyError: 'cleanup'",
    )


async def test_fail_marks_a_handled_failure(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """``fail()`` makes a span that ended normally an ``error``."""
    trace = RequestTrace("req_1")
    with trace.span("cache") as span:
        span.fail("redis down: memory fallback")
    line = spans(logs)["cache"]
    assert (line["outcome"], line["error"]) == ("error", "redis down: memory fallback")


async def test_mark_keeps_the_first_time(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """``mark()`` on every event keeps the first: the call's time to first token."""
    trace = RequestTrace("req_1")
    with trace.span("router") as span:
        await trio.sleep(0.3)
        for _ in range(3):
            span.mark()
            await trio.sleep(0.1)
    assert spans(logs)["router"]["ttft_ms"] == 300.0


async def test_record_logs_a_span_measured_afterwards(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """``record()`` takes clock times; its parent is the span open where it is called."""
    trace = RequestTrace("req_1")
    with trace.span("tools") as tools:
        await trio.sleep(2)
        handle = trace.record(
            "tool", trace.started + 0.5, trace.clock(), outcome="error", error="timeout", tool="faq"
        )
    assert isinstance(handle, SpanHandle)
    line = spans(logs)["tool"]
    assert line["parent_id"] == tools.span_id
    assert (line["start"], line["duration_ms"]) == (500.0, 1500.0)
    assert (line["outcome"], line["error"], line["tool"]) == ("error", "timeout", "faq")


async def test_summary_derives_timings_from_spans(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """A Path A request: every timing comes out of its spans, exactly."""
    trace = RequestTrace("req_1")
    with trace.span("prepare") as prepare:
        await trio.sleep(0.2)  # waiting for a prepare slot
        trace.record("queue", trace.started, trace.clock())
        await trio.sleep(0.01)
    start = trace.clock()
    await trio.sleep(0.1)  # waiting for an LLM-stream slot
    trace.record("queue", start, trace.clock(), parent=trace.root)
    with trace.span("router") as router:
        await trio.sleep(0.3)
        router.mark()
    with trace.span("tools"):
        await trio.sleep(0.4)
    with trace.span("answer") as answer:
        await trio.sleep(0.25)
        answer.mark()
        first = trace.clock()
        await trio.sleep(1)
    trace.record("stream", first, trace.clock())
    line = trace.summary(path="tools", outcome="done", shared=False, cached=False, tokens={})
    queues = [q for q in logs if q.get("span") == "queue"]
    assert [q["parent_id"] for q in queues] == [prepare.span_id, ROOT_SPAN_ID]
    assert summary(logs) == line | {"event": "request summary", "log_level": "info"}
    assert {k: v for k, v in line.items() if k.endswith("_ms")} == {
        "queue_ms": 300.0,
        "prepare_ms": 10.0,
        "router_ttft_ms": 300.0,
        "tools_ms": 400.0,
        "answer_ttft_ms": 250.0,
        "first_token_ms": 1260.0,
        "total_ms": 2260.0,
    }
    assert (line["path"], line["outcome"], line["shared"], line["cached"]) == (
        "tools",
        "done",
        False,
        False,
    )


async def test_summary_prefers_what_the_caller_passes(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """Passed timings win; tools_ms falls back to the extent of the tool spans."""
    trace = RequestTrace("req_1")
    trace.record("tool", trace.started + 1, trace.started + 2)
    trace.record("tool", trace.started + 1.5, trace.started + 3)
    await trio.sleep(4)
    line = trace.summary(outcome="overloaded", total_ms=99)
    assert (line["total_ms"], line["tools_ms"]) == (99, 2000.0)
    assert "queue_ms" not in line and "first_token_ms" not in line


async def test_no_message_text_unless_asked(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """``message`` and ``answer`` are dropped from spans and the summary by default."""
    trace = RequestTrace("req_1")
    with trace.span("prepare", message="my secret question"):
        pass
    trace.summary(outcome="done", message="my secret question", answer="the answer")
    assert "secret" not in repr(logs) and "the answer" not in repr(logs)


async def test_message_text_when_include_text(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """With ``include_text=True`` (``log.include_text``) the summary carries both texts."""
    trace = RequestTrace("req_1", include_text=True)
    trace.summary(outcome="done", message="what is 2+2?", answer="4")
    assert (summary(logs)["message"], summary(logs)["answer"]) == ("what is 2+2?", "4")


async def test_reserved_attributes_do_not_break_the_line(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """An attribute named ``event`` or ``request_id`` cannot replace the line's own."""
    trace = RequestTrace("req_1")
    with trace.span("x", event="oops") as span:
        span.set(request_id="other")
    assert (logs[0]["event"], logs[0]["request_id"]) == ("span", "req_1")


async def test_a_span_is_used_once(autojump_clock: trio.abc.Clock, logs: Logs) -> None:
    """Entering the same handle twice is a mistake, said at once."""
    trace = RequestTrace("req_1")
    span = trace.span("x")
    with span:
        pass
    with pytest.raises(RuntimeError, match="already entered"), span:
        pass  # pragma: no cover


async def test_a_finished_trace_is_freed_without_the_cycle_collector(
    autojump_clock: trio.abc.Clock, logs: Logs
) -> None:
    """No reference cycles: once its last user lets go, a trace is freed at once.
    (Not tried with a cancel scope: a caught ``Cancelled`` keeps its frames in a
    cycle of trio's own, whatever they hold.)"""

    async def one_request() -> weakref.ref[RequestTrace]:
        trace = RequestTrace("req_1")
        with trace.span("flight") as flight:
            try:
                with trace.span("router"):
                    raise ValueError("boom")
            except ValueError:
                pass
            with trace.under(flight), trace.span("answer") as answer:
                answer.mark()
                await trio.sleep(1)
            trace.record("queue", trace.started, trace.clock(), parent=trace.root)
        trace.summary(outcome="done")
        return weakref.ref(trace)

    gc.collect()
    gc.disable()
    try:
        ref = await one_request()
        assert ref() is None
    finally:
        gc.enable()
    assert [line["span"] for line in logs[:4]] == ["router", "answer", "queue", "flight"]


def test_custom_clock_and_logger_outside_trio() -> None:
    """``clock`` and ``log`` are the caller's: no trio run needed."""
    now = [10.0]
    lines: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def info(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

    trace = RequestTrace("req_1", clock=lambda: now[0], log=Log())
    with trace.span("a") as a:
        now[0] += 0.5
        with trace.span("b"):
            now[0] += 0.25
    trace.summary(outcome="done")
    assert [event for event, _ in lines] == ["span", "span", "request summary"]
    assert lines[0][1]["parent_id"] == a.span_id
    assert (lines[1][1]["duration_ms"], lines[2][1]["total_ms"]) == (750.0, 750.0)
