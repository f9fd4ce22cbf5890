"""A sans-IO Server-Sent Events decoder (the WHATWG event-stream format).

Bytes go in as they arrive, in any split; complete events come out. It
handles LF, CR and CRLF line ends (a CRLF split across two reads included),
comment lines, multi-line ``data`` fields, a leading byte-order mark and
field lines without a space after the colon. It never looks at what the data
means: :mod:`chatd.llm.openai` does that.
"""

from __future__ import annotations

import attrs

from chatd.exceptions import UpstreamProtocolError

__all__ = ["SSEDecoder", "SSEEvent"]

_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class SSEEvent:
    """One dispatched event: its ``data`` lines joined by LF, as bytes."""

    data: bytes
    event: str = "message"
    id: str | None = None


@attrs.define
class SSEDecoder:
    """Turns a byte stream into :class:`SSEEvent`s; feed it with :meth:`feed`.

    ``max_line_bytes`` bounds the buffer so a stream that never ends a line
    cannot grow memory without limit.
    """

    max_line_bytes: int = 1 << 20
    _buf: bytes = attrs.field(default=b"", init=False)
    _data: list[bytes] = attrs.field(factory=list, init=False)
    _event: str = attrs.field(default="", init=False)
    _id: str | None = attrs.field(default=None, init=False)
    _skip_lf: bool = attrs.field(default=False, init=False)
    _started: bool = attrs.field(default=False, init=False)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take the next bytes of the stream; return the events they complete."""
        if not chunk:
            return []
        if (
            chunk.endswith(b"\n\n")
            and self._started
            and not (self._buf or self._data or self._event or self._skip_lf)
        ):
            events = self._whole_data_events(chunk)
            if events is not None:
                return events
        return self._feed(chunk)

    def _whole_data_events(self, chunk: bytes) -> list[SSEEvent] | None:
        """The common case, cheaply: whole events of one ``data: `` line each
        (an LLM's every chunk); ``None`` for anything else."""
        if b"\r" in chunk:
            return None
        events = []
        for block in chunk[:-2].split(b"\n\n"):
            if not block.startswith(b"data: ") or b"\n" in block:
                return None
            events.append(SSEEvent(block[6:], "message", self._id))
        return events

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf:  # the previous read ended in CR: this LF belongs to it
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not self._started:
            buf = self._buf + chunk
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            chunk, self._buf = buf.removeprefix(_BOM), b""
        if b"\r" in chunk:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > self.max_line_bytes:
            raise UpstreamProtocolError(
                f"event stream line longer than {self.max_line_bytes} bytes"
            )
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(b"\n".join(self._data), self._event or "message", self._id)
                    )
                    self._data = []
                self._event = ""
                continue
            if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
            # "retry" and unknown fields are ignored, as the standard says
        return events

    def close(self) -> list[SSEEvent]:
        """The stream ended: dispatch what is pending.

        The standard discards an event without its blank line; some servers
        end with ``data: [DONE]`` and no blank line, so we are lenient. A line
        cut in the middle still reaches the caller, whose parse then fails.
        """
        tail, self._buf = self._buf, b""
        events = self.feed(tail + b"\n\n") if tail or self._data else []
        self._data, self._event = [], ""
        return events
