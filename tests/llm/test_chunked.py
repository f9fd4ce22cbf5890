"""The chunked-body decoder: whatever h11 encodes, split anywhere, decodes to the body."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.llm.chunked import ChunkedBody


def encoded(chunks: list[bytes], trailers: list[tuple[bytes, bytes]]) -> bytes:
    """A chunked body as h11's server side writes it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    head = conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    assert head is not None
    body = b"".join(conn.send(h11.Data(data=c)) or b"" for c in chunks)
    return body + (conn.send(h11.EndOfMessage(headers=trailers)) or b"")


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=10),
    trailers=st.sampled_from([[], [(b"x-done", b"yes")]]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
    extra=st.binary(max_size=20),
)
def test_any_split_decodes_to_the_body(
    chunks: list[bytes], trailers: list[tuple[bytes, bytes]], cuts: list[int], extra: bytes
) -> None:
    """However the bytes arrive, the body comes out whole and in order, the end
    is seen, and bytes after it are left over."""
    data = encoded(chunks, trailers) + extra
    decoder = ChunkedBody()
    out = []
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        decoder.feed(data[start:cut])
        out.append(decoder.take())
        start = cut
    assert b"".join(out) == b"".join(chunks)
    assert decoder.done
    assert decoder.leftover == extra


def test_extensions_and_upper_case_hex() -> None:
    """Chunk extensions are skipped; sizes are hex in either case."""
    decoder = ChunkedBody(b"A;name=value\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n")
    assert decoder.take() == b"0123456789x"
    assert decoder.done


def test_nothing_until_a_whole_size_line() -> None:
    """A partial size line gives nothing yet; the rest of it gives the data."""
    decoder = ChunkedBody(b"1")
    assert decoder.take() == b""
    decoder.feed(b"0\r\n" + b"y" * 16 + b"\r\n")
    assert decoder.take() == b"y" * 16
    assert not decoder.done


@pytest.mark.parametrize(
    "data",
    [
        b"zz\r\nhello\r\n",  # not hex
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"\r\n",  # an empty size line
        b"1" * 17 + b"\r\n",  # too many digits
        b"1" * 5000,  # a size line that never ends
    ],
)
def test_malformed_is_a_protocol_error(data: bytes) -> None:
    """Broken framing is h11's RemoteProtocolError, as h11 itself would raise."""
    with pytest.raises(h11.RemoteProtocolError):
        ChunkedBody(data).take()
