"""What each frame and ``POST /v1/chat`` body must get back, per protocol.md.

The limits of the chatd under fuzz (:func:`fuzz_settings`), the reply a
WebSocket frame is owed (:func:`reply_to`, :class:`Frame`) and the answer an
HTTP body is owed (:func:`http_case`), worked out when the frame or body is
made so that a step never waits for a reply it does not need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import orjson

from chatd.config import (
    CacheSettings,
    KBSettings,
    LimitsSettings,
    Settings,
    SimSettings,
)

MAX_FRAME = 2048
MAX_MESSAGE = 300


def valid_id(value: object) -> bool:
    """protocol.md: an id is 1 to 128 printable characters."""
    return isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()


def frame_size(payload: str) -> int:
    """What protocol.md counts against ``limits.max_frame_bytes``: the frame's
    UTF-8 bytes, as for a ``POST /v1/chat`` body."""
    return len(payload.encode())


def fuzz_settings(kb_path: Path) -> Settings:
    """A chatd for fuzzing: small limits (frames near them stay cheap), a
    simulator fast enough that an answer takes a few milliseconds (at 5,000
    tokens/s it paces in 50 ms batches and every chat would take 60 ms), and
    an answer cache small enough to fill in the first 200 examples (for the
    memory check)."""
    return Settings(
        sim=SimSettings(ttft_ms=1, tokens_per_s=100_000),
        kb=KBSettings(path=str(kb_path)),
        limits=LimitsSettings(max_frame_bytes=MAX_FRAME, max_message_chars=MAX_MESSAGE),
        cache=CacheSettings(max_entries=128),
    )


# -- What a frame must get back --------------------------------------------------------


@attrs.frozen
class Reply:
    """What one frame must get back, per protocol.md.

    ``terminal``: a well-formed chat: exactly one ``done`` or ``error`` under
    ``id`` (its own, or the refusal of a duplicate id in flight); ``error``:
    exactly one ``error`` with ``code`` under ``id`` (``None``: the
    connection's); ``pong``; ``nothing`` (a cancel).
    """

    kind: Literal["terminal", "error", "pong", "nothing"]
    id: str | None = None
    code: str | None = None


def _chat_is_well_formed(data: dict[str, Any]) -> bool:
    message, session = data.get("message"), data.get("session")
    return (
        isinstance(message, str)
        and bool(message)
        and (session is None or (isinstance(session, str) and bool(session)))
        and isinstance(data.get("metadata", {}), dict)
    )


def reply_to(payload: str | bytes, *, prefix_id: object = None) -> Reply:
    """The reply protocol.md gives ``payload``; ``prefix_id`` is the id an
    oversized frame shows before its first non-scalar member (``None``: it
    shows none)."""
    if isinstance(payload, bytes):
        return Reply("error", None, "bad_request")
    if frame_size(payload) > MAX_FRAME:
        return Reply("error", prefix_id if valid_id(prefix_id) else None, "too_large")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Reply("error", None, "bad_request")
    if not isinstance(data, dict):
        return Reply("error", None, "bad_request")
    request_id = data["id"] if valid_id(data.get("id")) else None
    kind = data.get("type")
    if kind == "chat":
        if request_id is None:
            return Reply("error", None, "bad_request")
        if _chat_is_well_formed(data):
            return Reply("terminal", request_id)
        return Reply("error", request_id, "bad_request")
    if kind == "cancel":
        return Reply("nothing") if request_id else Reply("error", None, "bad_request")
    if kind == "ping":  # an id that is not valid is left out, not refused
        return Reply("pong", request_id)
    return Reply("error", request_id, "bad_request")  # no type, or an unknown one


@attrs.frozen(repr=False)
class Frame:
    """One WebSocket message to send, what it must get back, and how it is sent."""

    payload: str | bytes
    reply: Reply
    label: str
    fragments: int = 1
    """Sent in this many WebSocket frames (continuations), a ping between them."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints attrs classes field by field otherwise

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 80 else self.payload[:60]
        more = "" if len(self.payload) <= 80 else f"...<{len(self.payload)}>"
        parts = f", fragments={self.fragments}" if self.fragments > 1 else ""
        return f"Frame({self.label}, {shown!r}{more}{parts})"


def frame(payload: str | bytes, label: str, *, prefix_id: object = None) -> Frame:
    """A frame and its reply per :func:`reply_to`."""
    return Frame(payload, reply_to(payload, prefix_id=prefix_id), label)


# -- HTTP bodies -----------------------------------------------------------------------


@attrs.frozen
class HTTPCase:
    """A ``POST /v1/chat``: body, headers, and the status and code it must get."""

    body: bytes
    content_type: str | None
    sse: bool
    status: int
    code: str | None
    """For an error, its protocol code; for SSE with status 200, the error the
    stream must end with (``None``: ``done``)."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 80 else self.body[:60] + b"..."
        return f"HTTPCase({body!r}<{len(self.body)}>, {self.content_type!r}, sse={self.sse})"


def http_case(body: bytes, content_type: str | None, sse: bool) -> HTTPCase:
    """The answer ``body`` must get: protocol.md's, and since a16dc8f a body
    not declared ``application/json`` is refused (415) before it is read."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        return HTTPCase(body, content_type, sse, 415, "bad_request")
    if len(body) > MAX_FRAME:
        return HTTPCase(body, content_type, sse, 413, "too_large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return HTTPCase(body, content_type, sse, 400, "bad_request")
    if not isinstance(data, dict) or not _chat_is_well_formed(data):
        return HTTPCase(body, content_type, sse, 400, "bad_request")
    if len(data["message"]) > MAX_MESSAGE:  # refused by the pipeline, after the stream began
        return HTTPCase(body, content_type, sse, 200 if sse else 413, "too_large")
    return HTTPCase(body, content_type, sse, 200, None)
