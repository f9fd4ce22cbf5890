"""The events a request sends its client (protocol.md §1), and their encoding.

Each event is a frozen attrs class whose fields are the wire fields; the
request's ``id`` is added when it is encoded. :data:`TERMINAL` names the two
that end a request. Encoding uses orjson and drops optional fields that are
unset, so the wire carries exactly what protocol.md lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, get_args

import attrs
import orjson

from chatd.exceptions import ChatdError
from chatd.redaction import redact

__all__ = [
    "EVENT_TYPES",
    "Accepted",
    "Done",
    "Error",
    "Event",
    "Pong",
    "Queued",
    "Route",
    "Token",
    "ToolEnd",
    "ToolStart",
    "encode",
    "error_event",
    "is_terminal",
    "merged",
    "wire_object",
]


@attrs.frozen
class Accepted:
    """The request passed validation, auth and rate limits."""

    type: ClassVar[str] = "accepted"
    request_id: str


@attrs.frozen
class Queued:
    """It waits for capacity; ``position`` 1 is next."""

    type: ClassVar[str] = "queued"
    position: int


@attrs.frozen
class Route:
    """The path is final."""

    type: ClassVar[str] = "route"
    path: str
    tools: tuple[str, ...] = ()


@attrs.frozen
class ToolStart:
    """A tool began."""

    type: ClassVar[str] = "tool_start"
    call_id: str
    tool: str
    arguments: Mapping[str, Any]


@attrs.frozen
class ToolEnd:
    """A tool finished."""

    type: ClassVar[str] = "tool_end"
    call_id: str
    tool: str
    ok: bool
    duration_ms: int
    error: str | None = None


@attrs.frozen
class Token:
    """The next piece of the answer."""

    type: ClassVar[str] = "token"
    text: str


@attrs.frozen
class Done:
    """Terminal: the answer is complete, or was cancelled."""

    type: ClassVar[str] = "done"
    request_id: str
    finish_reason: str
    path: str | None
    shared: bool
    cached: bool
    usage: Mapping[str, int]
    timings: Mapping[str, int | None]
    degraded: bool | None = None
    """``True`` when the LLM was unavailable and the knowledge base answered
    alone (sent only then)."""


@attrs.frozen
class Error:
    """Terminal: the request failed (or, for a frame, was refused)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    retry_after_ms: int | None = None
    request_id: str | None = None
    """The server's id of the request, when one was assigned: the logs and
    ``chatd trace`` know it (sent only then)."""


@attrs.frozen
class Pong:
    """The answer to ``ping``."""

    type: ClassVar[str] = "pong"


Event = Accepted | Queued | Route | ToolStart | ToolEnd | Token | Done | Error | Pong

EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in get_args(Event)}
"""Every event class by its wire ``type``."""


def merged(events: Iterable[Event]) -> tuple[Event, ...]:
    """``events`` with each run of tokens made one token (its texts joined): what
    a client reads is the same, and a kept answer holds a few objects, not one
    per token (fewer for the garbage collector to walk)."""
    out: list[Event] = []
    texts: list[str] = []
    for event in events:
        if type(event) is Token:
            texts.append(event.text)
            continue
        if texts:
            out.append(Token("".join(texts)))
            texts = []
        out.append(event)
    if texts:
        out.append(Token("".join(texts)))
    return tuple(out)


def is_terminal(event: Event) -> bool:
    """``done`` and ``error`` end a request."""
    return isinstance(event, Done | Error)


UNAVAILABLE_RETRY_MS = 1000
"""The hint an ``upstream_unavailable`` carries when its dependency gave none
(a refused connection): protocol.md's table promises one for that code."""


def error_event(exc: ChatdError) -> Error:
    """The wire form of one of chatd's errors: its code, words and retry hint."""
    retry_after_ms = exc.retry_after_ms
    if retry_after_ms is None and exc.code == "upstream_unavailable":
        retry_after_ms = UNAVAILABLE_RETRY_MS
    return Error(exc.code, redact(exc.message), retry_after_ms)


_OPTIONAL = frozenset({"error", "retry_after_ms", "degraded", "request_id"})


def _fields(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if value is None and field.name in _OPTIONAL:
            continue
        out[field.name] = value
    return out


def wire_object(event: Event) -> dict[str, Any]:
    """The event as its frame's JSON object, without the request's ``id``."""
    return {"type": event.type, **_fields(event)}


def encode(event: Event, request_id: str | None, seq: int | None = None) -> bytes:
    """One JSON frame: ``type``, the request's ``id`` (when known), the fields,
    and ``seq``, the event's number, for a resumable request's."""
    if type(event) is Token and seq is None:  # the hot path: one per streamed piece
        return orjson.dumps({"type": "token", "id": request_id, "text": event.text})
    frame: dict[str, Any] = {"type": event.type}
    if request_id is not None:
        frame["id"] = request_id
    frame.update(_fields(event))
    if seq is not None:
        frame["seq"] = seq
    return orjson.dumps(frame)
