"""Assembling OpenAI chunks: text, tool calls by index, usage, malformed streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.exceptions import UpstreamError, UpstreamProtocolError
from chatd.llm.openai import ChunkAssembler, parse_completion
from chatd.llm.sse import SSEDecoder, SSEEvent
from chatd.llm.types import ChatEvent, Completion, TextDelta, ToolCall, ToolCallBegin, Usage


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool_call_stream(calls: list[tuple[str, str]], piece: int) -> list[bytes]:
    """Tool calls streamed as OpenAI does: id and name, then argument pieces."""
    out = [chunk({"role": "assistant", "content": None})]
    for index, (name, args) in enumerate(calls):
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for i in range(0, len(args), piece):
            part = {"index": index, "function": {"arguments": args[i : i + piece]}}
            out.append(chunk({"tool_calls": [part]}))
    out.append(chunk({}, "tool_calls"))
    out.append(b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}\n\n')
    out.append(b"data: [DONE]\n\n")
    return out


def run(data: bytes, cuts: list[int]) -> list[ChatEvent]:
    decoder, assembler = SSEDecoder(), ChunkAssembler()
    events: list[ChatEvent] = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        events += assembler.feed(decoder.feed(data[start:cut]))
        start = cut
    events += assembler.feed(decoder.close())
    return [*events, assembler.finish()]


@given(
    tokens=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
)
def test_text_stream_any_chunking(tokens: list[str], cuts: list[int]) -> None:
    """The text deltas concatenate to the answer, however the bytes arrive."""
    data = b"".join(
        [chunk({"role": "assistant", "content": ""})]
        + [chunk({"content": t}) for t in tokens]
        + [chunk({}, "stop"), b"data: [DONE]\n\n"]
    )
    events = run(data, cuts)
    completion = events[-1]
    assert completion == Completion("".join(tokens), (), "stop", None)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "".join(tokens)


@given(
    args=st.lists(
        st.dictionaries(
            st.text(max_size=5), st.integers(-(2**53), 2**53) | st.text(max_size=8), max_size=3
        ),
        min_size=1,
        max_size=3,
    ),
    piece=st.integers(min_value=1, max_value=10),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_tool_calls_assembled_by_index(
    args: list[dict[str, Any]], piece: int, cuts: list[int]
) -> None:
    """Arguments split over chunks come back whole, in index order, each begun once."""
    calls = [(f"tool{i}", orjson.dumps(a).decode()) for i, a in enumerate(args)]
    events = run(b"".join(tool_call_stream(calls, piece)), cuts)
    begins = [e for e in events if isinstance(e, ToolCallBegin)]
    assert begins == [ToolCallBegin(i, f"call_{i}", name) for i, (name, _a) in enumerate(calls)]
    completion = events[-1]
    assert isinstance(completion, Completion)
    assert completion.tool_calls == tuple(
        ToolCall(f"call_{i}", name, a) for i, (name, a) in enumerate(calls)
    )
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(9, 4)


def test_text_read_together_is_one_delta() -> None:
    """Tokens that arrive in one read become one TextDelta (fewer frames downstream)."""
    assembler = ChunkAssembler()
    events = assembler.feed([SSEEvent(chunk({"content": t})[6:-2]) for t in ["a", "b", "c"]])
    assert events == [TextDelta("abc")]


def test_stream_cut_before_done_is_an_error() -> None:
    """A stream that ends with neither [DONE] nor a finish reason was cut."""
    assembler = ChunkAssembler()
    assembler.feed([SSEEvent(chunk({"content": "partial"})[6:-2])])
    with pytest.raises(UpstreamProtocolError, match="ended before it finished"):
        assembler.finish()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "chunk is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"choices": 3}', "no choices list"),
        (b'{"choices": [{"delta": 5}]}', "delta is not an object"),
        (b'{"choices": [{"delta": {"tool_calls": {}}}]}', "tool_calls is not a list"),
        (b'{"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}', "without a name"),
    ],
)
def test_malformed_chunks(data: bytes, message: str) -> None:
    """Each malformed shape is a protocol error that says what was wrong."""
    with pytest.raises(UpstreamProtocolError, match=message):
        ChunkAssembler().feed([SSEEvent(data)])


def test_error_object_mid_stream() -> None:
    """A provider's error object mid-stream keeps its message."""
    with pytest.raises(UpstreamError, match="model overloaded"):
        ChunkAssembler().feed([SSEEvent(b'{"error": {"message": "model overloaded"}}')])


def test_tool_call_without_index() -> None:
    """Servers that omit the index for one call still assemble it."""
    assembler = ChunkAssembler()
    assembler.feed(
        [
            SSEEvent(
                b'{"choices":[{"delta":{"tool_calls":[{"id":"c1","function":'
                b'{"name":"clock","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}'
            )
        ]
    )
    assert assembler.finish().tool_calls == (ToolCall("c1", "clock", "{}"),)


def test_parse_completion() -> None:
    """A non-streamed answer with tool calls, arguments given as an object too."""
    body = orjson.dumps(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "a", "function": {"name": "calc", "arguments": '{"x":1}'}},
                            {"id": "b", "function": {"name": "clock", "arguments": {"tz": "UTC"}}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
    )
    assert parse_completion(body) == Completion(
        "",
        (ToolCall("a", "calc", '{"x":1}'), ToolCall("b", "clock", '{"tz":"UTC"}')),
        "tool_calls",
        Usage(3, 2),
    )
    with pytest.raises(UpstreamProtocolError, match="not a chat completion"):
        parse_completion(b'{"choices": []}')
