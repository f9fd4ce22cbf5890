"""Spans and summaries as a real request writes them, read back by ``chatd trace``."""

from __future__ import annotations

import io

import orjson
import structlog
import trio
from rich.console import Console

from chatd.cli.trace import LogIndex, render_timeline
from chatd.testing import ChatClient, Chatd


async def test_path_a_writes_its_spans_and_one_summary(chatd: Chatd, client: ChatClient) -> None:
    """Path A: admission, prepare, flight, router, tools with each tool, answer and
    stream, in the right tree; one summary with the timings; no message text."""
    with structlog.testing.capture_logs() as logs:
        with trio.fail_after(10):
            await client.chat("a", "what is 12*7 and what time is it?")
            done = await client.finish("a")
    request_id = done["request_id"]
    mine = [line for line in logs if line.get("request_id") == request_id]
    spans = {line["span"]: line for line in mine if line["event"] == "span"}
    assert {"admission", "prepare", "cache", "flight", "router", "tools", "tool"} <= spans.keys()
    assert {"answer", "stream"} <= spans.keys()
    assert spans["router"]["parent_id"] == spans["flight"]["span_id"]
    assert spans["tool"]["parent_id"] == spans["tools"]["span_id"]
    assert all(line["outcome"] == "ok" for line in spans.values())
    (summary,) = [line for line in mine if line["event"] == "request summary"]
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
