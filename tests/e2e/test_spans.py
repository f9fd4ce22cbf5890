"""Spans and summaries as a real request writes them, read back by ``chatd trace``."""

from __future__ import annotations

import io
from typing import Any

import orjson
import structlog
import trio
from rich.console import Console

from chatd.cli.trace import LogIndex, render_timeline
from chatd.config import LogSettings
from chatd.testing import ChatClient, Chatd, open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings, open_chatd_with_llm_down


async def test_path_a_writes_its_spans_and_one_summary(chatd: Chatd, client: ChatClient) -> None:
    """Path A: admission, prepare, flight, router, tools with each tool, answer and
    stream, in the right tree; one summary with the timings; no message text."""
    with structlog.testing.capture_logs() as logs:
        with trio.fail_after(10):
            await client.chat("a", "what is 12*7 and what time is it?")
            done = await client.finish("a")
    request_id = done["request_id"]
    mine = [line for line in logs if line.get("request_id") == request_id]
    assert not [line for line in mine if line["event"] == "span"], "spans only at debug level"
    (summary,) = [line for line in mine if line["event"] == "request summary"]
    spans = {span["span"]: span for span in summary["spans"]}
    assert {"admission", "prepare", "cache", "flight", "router", "tools", "tool"} <= spans.keys()
    assert {"answer", "stream"} <= spans.keys()
    assert spans["router"]["parent_id"] == spans["flight"]["span_id"]
    assert spans["tool"]["parent_id"] == spans["tools"]["span_id"]
    assert all(line["outcome"] == "ok" for line in spans.values())
    assert (summary["path"], summary["outcome"]) == ("tools", "done")
    assert summary["first_token_ms"] <= summary["total_ms"]
    assert {"router_ttft_ms", "tools_ms", "answer_ttft_ms"} <= summary.keys()
    assert "12*7" not in repr(mine)

    index = LogIndex(request_id)
    for line in mine:
        index.add(orjson.dumps(line))
    out = Console(record=True, width=120, file=io.StringIO())
    render_timeline(out, index.requests[request_id])
    assert "└─ stream" in out.export_text()


async def spans_of(
    client: ChatClient, request_id: str, message: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask, and return the request's spans by name and its one summary line."""
    with structlog.testing.capture_logs() as logs:
        with trio.fail_after(10):
            await client.chat(request_id, message)
            done = await client.finish(request_id)
    server_id = done.get("request_id") or client.events[request_id][0]["request_id"]
    mine = [line for line in logs if line.get("request_id") == server_id]
    (summary,) = [line for line in mine if line["event"] == "request summary"]
    return {span["span"]: span for span in summary["spans"]}, summary


async def test_direct_path_spans(client: ChatClient) -> None:
    """Direct: the router's stream is the answer; no tools, no answer call."""
    spans, summary = await spans_of(client, "d", "tell me a story about the sea")
    assert {"router", "stream"} <= spans.keys()
    assert not {"tools", "tool", "answer", "tool_stream"} & spans.keys()
    assert summary["path"] == "direct" and "router_ttft_ms" in summary
    assert "the sea" not in repr(spans) + repr(summary)


async def test_tool_stream_spans(client: ChatClient) -> None:
    """Path B: the tool nests under the router; its streamed answer follows the
    router, closed once the tool was confident; no answer call."""
    spans, summary = await spans_of(client, "b", "How do I reset my password?")
    assert {"router", "tools", "tool", "tool_stream"} <= spans.keys()
    assert "answer" not in spans
    assert spans["tool"]["tool"] == "frequently_asked"
    assert spans["tools"]["parent_id"] == spans["router"]["span_id"]
    router, streamed = spans["router"], spans["tool_stream"]
    assert streamed["parent_id"] == router["parent_id"]
    assert streamed["start"] >= router["start"] + router["duration_ms"]
    assert summary["path"] == "tool_stream"


async def test_failing_tool_span_says_why(client: ChatClient) -> None:
    """A failing tool's span has outcome error and the tool's reason."""
    spans, summary = await spans_of(client, "f", "what is 1/0?")
    assert spans["tool"]["outcome"] == "error"
    assert "zero" in spans["tool"]["error"]
    assert summary["outcome"] == "done"


async def test_open_breaker_shows_in_spans(make_settings: MakeSettings) -> None:
    """With the LLM's breaker open, the router span fails saying so, as does the summary."""
    async with open_chatd_with_llm_down(make_settings, failure_threshold=1) as (_chatd, client):
        await spans_of(client, "x", "hello")
        spans, summary = await spans_of(client, "y", "hello")
    assert spans["router"]["outcome"] == "error"
    assert "circuit breaker is open" in spans["router"]["error"]
    assert summary["outcome"] == "upstream_unavailable"


async def test_text_only_when_asked(make_settings: MakeSettings) -> None:
    """With log.include_text the summary carries the message and the answer."""
    settings = make_settings(log=LogSettings(include_text=True))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        _spans, summary = await spans_of(client, "t", "what is 6*7?")
    assert summary["message"] == "what is 6*7?"
    assert "42" in summary["answer"]


async def test_lines_carry_connection_id(make_settings: MakeSettings) -> None:
    """At debug level each span is a line of its own too, and every line of a
    WebSocket request (spans and summary) names its connection."""
    settings = make_settings(log=LogSettings(level="debug"))
    async with open_chatd(settings) as chatd, open_chat_client(chatd.ws_url) as client:
        with structlog.testing.capture_logs() as logs, trio.fail_after(10):
            await client.chat("c", "hello there")
            done = await client.finish("c")
    lines = [line for line in logs if line.get("request_id") == done["request_id"]]
    (summary,) = [line for line in lines if line["event"] == "request summary"]
    span_lines = [line for line in lines if line["event"] == "span"]
    assert [line["span"] for line in span_lines] == [span["span"] for span in summary["spans"]]
    ids = {line["connection_id"] for line in lines}
    assert len(ids) == 1 and ids.pop().startswith("conn_")
