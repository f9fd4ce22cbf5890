"""What a connection's frames must get back (:class:`Ledger`), what it got
(:class:`Tally`, checked event by event), what makes one event from chatd
ill-formed (:func:`event_problem`), and :class:`Mismatch`, the failure."""

from __future__ import annotations

import collections
from typing import Any

import attrs

from .replies import Reply

ERROR_CODES = frozenset(
    {
        "bad_request",
        "too_large",
        "unauthorized",
        "rate_limited",
        "overloaded",
        "upstream_unavailable",
        "upstream_error",
        "timeout",
        "shutting_down",
    }
)
"""protocol.md's error table, less ``internal``: that one is a bug, and fails the fuzz."""
RUN_EVENTS = frozenset({"queued", "route", "tool_start", "tool_end", "token"})
REFUSALS = frozenset({"bad_request", "too_large"})
"""Codes decided before a request is accepted: inside a run under the same id,
such an error answers another frame (a duplicate id, a malformed frame naming it)."""
EVENT_TYPES = RUN_EVENTS | {"accepted", "done", "error", "pong"}


class Mismatch(AssertionError):
    """chatd broke protocol.md; the message says how."""


@attrs.define(eq=False, repr=False)
class Ledger:
    """What a connection's frames must get back, by id."""

    terminals: collections.Counter[str] = attrs.field(factory=collections.Counter)
    codes: dict[str, collections.Counter[str]] = attrs.field(
        factory=lambda: collections.defaultdict(collections.Counter)
    )
    """Per id, errors of a code that must come (malformed frames with that id)."""
    connection_errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    pongs: collections.Counter[str | None] = attrs.field(factory=collections.Counter)

    def add(self, reply: Reply) -> None:
        if reply.kind == "terminal":
            assert reply.id is not None
            self.terminals[reply.id] += 1
        elif reply.kind == "error" and reply.id is None:
            assert reply.code is not None
            self.connection_errors[reply.code] += 1
        elif reply.kind == "error":
            assert reply.code is not None and reply.id is not None
            self.terminals[reply.id] += 1
            self.codes[reply.id][reply.code] += 1
        elif reply.kind == "pong":
            self.pongs[reply.id] += 1


@attrs.define
class Tally:
    """What a connection has got back, counted and checked event by event:
    per id, ``accepted``, run events, one terminal, and nothing of that id
    after it (pongs aside). An error in :data:`REFUSALS` inside a run answers
    another frame: a run never ends with one, as they are all decided before
    acceptance."""

    terminals: collections.Counter[str] = attrs.field(factory=collections.Counter)
    codes: dict[str, collections.Counter[str]] = attrs.field(
        factory=lambda: collections.defaultdict(collections.Counter)
    )
    connection_errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    pongs: collections.Counter[str | None] = attrs.field(factory=collections.Counter)
    runs: dict[str, str] = attrs.field(factory=dict)
    """Ids in a run now, and the run's request_id."""
    problems: list[str] = attrs.field(factory=list)

    def add(self, event: dict[str, Any]) -> None:
        kind, request_id = event["type"], event.get("id")
        if kind == "pong":
            self.pongs[request_id] += 1
        elif request_id is None:
            if kind != "error":
                self.problems.append(f"a {kind} event without an id: {event}")
            else:
                self.connection_errors[event["code"]] += 1
        elif kind == "accepted":
            if request_id in self.runs:
                self.problems.append(f"a second accepted for {request_id!r} in flight: {event}")
            self.runs[request_id] = event["request_id"]
        elif kind in RUN_EVENTS:
            if request_id not in self.runs:
                self.problems.append(f"{kind} for {request_id!r} outside a run: {event}")
        elif kind == "done":
            self.terminals[request_id] += 1
            started = self.runs.pop(request_id, None)
            if started is None and event["finish_reason"] != "cancelled":
                # Cancelled before it was accepted (a cancel right behind its chat), a
                # request ends with done (cancelled) and no accepted: nothing else may.
                self.problems.append(f"done for {request_id!r} outside a run: {event}")
            elif started is not None and event["request_id"] != started:
                self.problems.append(f"done for {request_id!r} is {event['request_id']}'s")
        else:
            self.terminals[request_id] += 1
            self.codes[request_id][event["code"]] += 1
            if event["code"] not in REFUSALS:
                self.runs.pop(request_id, None)


def event_problem(event: object) -> str | None:
    """What is wrong with one event from chatd, if anything."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return f"not an event: {event!r}"
    kind = event["type"]
    if kind not in EVENT_TYPES:
        return f"an unknown event type: {event}"
    if "id" in event and not isinstance(event["id"], str):
        return f"an id that is not a string: {event}"
    if kind == "error" and (event.get("code") not in ERROR_CODES or not event.get("message")):
        return f"an error with a bad or internal code: {event}"
    if kind == "token" and not (isinstance(event.get("text"), str) and event["text"]):
        return f"a token without text: {event}"
    if kind == "done" and event.get("finish_reason") not in ("stop", "length", "cancelled"):
        return f"a done with a bad finish_reason: {event}"
    if kind in ("accepted", "done") and not isinstance(event.get("request_id"), str):
        return f"{kind} without a request_id: {event}"
    return None
