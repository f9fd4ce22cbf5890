"""``chatd trace``'s reading of chatd's JSON log: each request's spans,
summary and other lines (:class:`LogIndex`), and finding one by any unique
start of its id (:func:`find`). Lines that are not JSON, or lack the
fields, are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

__all__ = ["LINE_FIELDS", "LogIndex", "Request", "Span", "find"]

LINE_FIELDS: Final = frozenset({"event", "level", "timestamp", "request_id"})
SPAN_FIELDS: Final = LINE_FIELDS.union(
    ("span", "span_id", "parent_id", "start", "duration_ms", "outcome", "error")
)


@attrs.frozen
class Span:
    """One ``span`` line, times in ms from the request's start."""

    name: str
    span_id: int
    parent_id: int | None
    start: float
    duration: float
    outcome: str
    error: str | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_line(cls, line: Mapping[str, Any]) -> Span | None:
        """The span a log line describes, or ``None`` if a field is missing."""
        try:
            parent = line.get("parent_id")
            return cls(
                str(line["span"]),
                int(line["span_id"]),
                None if parent is None else int(parent),
                float(line["start"]),
                float(line["duration_ms"]),
                str(line.get("outcome", "ok")),
                line.get("error"),
                {k: v for k, v in line.items() if k not in SPAN_FIELDS},
            )
        except (KeyError, TypeError, ValueError):
            return None


@attrs.define
class Request:
    """What the log holds of one request."""

    request_id: str
    spans: list[Span] = attrs.field(factory=list)
    summary: dict[str, Any] | None = None
    notes: list[dict[str, Any]] = attrs.field(factory=list)


@attrs.define
class LogIndex:
    """Requests read from log lines: only ``request_id``'s in full if given,
    else only the summaries (a big log's spans are not kept for a listing)."""

    request_id: str | None = None
    """A request id, or the start of one: every request it starts is kept."""
    requests: dict[str, Request] = attrs.field(factory=dict)

    def add(self, raw: str | bytes) -> Request | None:
        """Take one line; returns the request if the line was its summary."""
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        request_id = line.get("request_id") if isinstance(line, dict) else None
        if not isinstance(request_id, str) or not request_id.startswith(self.request_id or ""):
            return None
        request = self.requests.setdefault(request_id, Request(request_id))
        event = line.get("event")
        if event == "request summary":
            request.summary = line
            if self.request_id is not None:  # its spans, unless their own lines came first
                known = {span.span_id for span in request.spans}
                for raw in line.get("spans") or ():
                    span = Span.from_line(raw) if isinstance(raw, dict) else None
                    if span is not None and span.span_id not in known:
                        request.spans.append(span)
            return request
        if self.request_id is not None:
            if event == "span":
                if (span := Span.from_line(line)) is not None:
                    request.spans.append(span)
            elif isinstance(event, str):
                request.notes.append(line)
        return None


def find(index: LogIndex, wanted: str) -> Request | str:
    """The one request whose id starts with ``wanted`` (with something in the
    log), or why not, in words."""
    matches = [
        r
        for r in index.requests.values()
        if r.request_id.startswith(wanted) and (r.summary or r.spans)
    ]
    exact = [r for r in matches if r.request_id == wanted]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return f"no request {wanted} in the log"
    ids = ", ".join(sorted(r.request_id for r in matches)[:5])
    return (
        f"{len(matches)} requests start with {wanted}: {ids}{', ...' if len(matches) > 5 else ''}"
    )
