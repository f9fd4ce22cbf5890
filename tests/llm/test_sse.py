"""The SSE decoder: any split of a valid stream gives the same events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.exceptions import UpstreamProtocolError
from chatd.llm.sse import SSEDecoder, SSEEvent

# Data lines may hold anything but line ends; a leading space is part of the
# value only after the one separator space the encoder always writes.
line_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)
events_st = st.lists(
    st.tuples(
        st.lists(line_text, min_size=1, max_size=3),
        st.sampled_from(["", "message", "delta", "error"]),
    ),
    max_size=8,
)


def encode(events: list[tuple[list[str], str]], newline: str, bom: bool, comments: bool) -> bytes:
    out = ["\ufeff"] if bom else []
    for lines, name in events:
        if comments:
            out.append(f": keep-alive{newline}")
        if name:
            out.append(f"event: {name}{newline}")
        out.extend(f"data: {line}{newline}" for line in lines)
        out.append(newline)
    return "".join(out).encode()


def expected(events: list[tuple[list[str], str]]) -> list[SSEEvent]:
    return [SSEEvent("\n".join(lines).encode(), name or "message") for lines, name in events]


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        out += decoder.feed(data[start:cut])
        start = cut
    out += decoder.feed(data[start:])
    out += decoder.close()
    return out


@given(
    events=events_st,
    newline=st.sampled_from(["\n", "\r", "\r\n"]),
    bom=st.booleans(),
    comments=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=30),
)
def test_any_chunking_gives_the_same_events(
    events: list[tuple[list[str], str]], newline: str, bom: bool, comments: bool, cuts: list[int]
) -> None:
    """Whatever the line ends and however the bytes are split, the events are the same."""
    data = encode(events, newline, bom, comments)
    assert feed_in_pieces(data, cuts) == expected(events)


@given(events=events_st, newline=st.sampled_from(["\n", "\r", "\r\n"]))
def test_byte_by_byte(events: list[tuple[list[str], str]], newline: str) -> None:
    """One byte per read, CRLF split across reads included."""
    data = encode(events, newline, bom=False, comments=True)
    assert feed_in_pieces(data, list(range(len(data)))) == expected(events)


def test_field_without_space_and_unknown_fields() -> None:
    """``data:x`` has value ``x``; ``retry`` and unknown fields are ignored; ``id`` is kept."""
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 10\nfoo: bar\nid: 7\ndata:x\ndata\n\n")
    assert events == [SSEEvent(b"x\n", "message", "7")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    """An event with no data field is dropped, as the standard says."""
    assert SSEDecoder().feed(b"event: ping\n\n\n\n") == []


def test_last_event_without_blank_line_is_kept_at_close() -> None:
    """Servers that end with ``data: [DONE]`` and no blank line still finish."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: [DONE]") == [SSEEvent(b"a")]
    assert decoder.close() == [SSEEvent(b"[DONE]")]


def test_endless_line_is_an_error() -> None:
    """A line past the bound is a protocol error, not unbounded memory."""
    decoder = SSEDecoder(max_line_bytes=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(UpstreamProtocolError, match="longer than 1000 bytes"):
        decoder.feed(b"x" * 200)


@given(events=events_st, newline=st.sampled_from(["\n", "\r\n"]), comments=st.booleans())
def test_whole_events_per_read_as_llms_send_them(
    events: list[tuple[list[str], str]], newline: str, comments: bool
) -> None:
    """Each read one or more whole events (the decoder's fast path when they are
    plain ``data:`` lines): the same events as any other split."""
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    for index in range(0, len(events), 2):  # one read, two events
        out += decoder.feed(encode(events[index : index + 2], newline, False, comments))
    out += decoder.close()
    assert out == expected(events)
