"""Events, outcomes, cached answers and errors as bytes, for Redis.

What one instance records another replays: a flight's events and how it
ended (:mod:`chatd.pipeline.flights_redis`), and finished answers kept in a
shared cache. The bytes are orjson; the shapes are cattrs' unstructured attrs
classes, each event tagged with its wire ``type``. ``*_to_json`` and
``*_from_json`` give the JSON-ready objects, for records that carry several.

Errors travel as their class's dotted name, ``args`` and scalar attributes, so
the receiver raises the same :class:`ChatdError` subclass, a copy of its own.
Decoding anything malformed raises :class:`CodecError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cattrs
import orjson

from chatd.exceptions import ChatdError
from chatd.pipeline.events import (
    Accepted,
    Done,
    Error,
    Event,
    Pong,
    Queued,
    Route,
    Token,
    ToolEnd,
    ToolStart,
)
from chatd.pipeline.turn import Outcome

if TYPE_CHECKING:
    from chatd.pipeline.request import CachedAnswer

__all__ = [
    "EVENT_TYPES",
    "CodecError",
    "decode_cached",
    "decode_event",
    "decode_outcome",
    "encode_cached",
    "encode_event",
    "encode_outcome",
    "error_from_json",
    "error_to_json",
    "event_from_json",
    "event_to_json",
    "outcome_from_json",
    "outcome_to_json",
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (Accepted, Queued, Route, ToolStart, ToolEnd, Token, Done, Error, Pong)
}
"""Every event class by its wire ``type``."""

_converter = cattrs.Converter(forbid_extra_keys=True)

_SCALARS = (str, int, float, bool, type(None))


class CodecError(ValueError):
    """Bytes or an object that are not what the codec writes."""


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dict: its fields and its ``type``."""
    if type(event) is Token:  # the hot path: one per streamed piece
        return {"type": "token", "text": event.text}
    obj: dict[str, Any] = _converter.unstructure(event)
    obj["type"] = event.type
    return obj


def event_from_json(obj: Any) -> Event:
    """The event :func:`event_to_json` made."""
    try:
        fields = dict(obj)
        cls = EVENT_TYPES[fields.pop("type")]
        event: Event = _converter.structure(fields, cls)
    except (AttributeError, KeyError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise CodecError(f"not an event: {obj!r:.200}") from exc
    return event


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    """An outcome as a JSON-ready dict."""
    obj: dict[str, Any] = _converter.unstructure(outcome)
    return obj


def outcome_from_json(obj: Any) -> Outcome:
    """The outcome :func:`outcome_to_json` made."""
    try:
        return _converter.structure(obj, Outcome)
    except (AttributeError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise CodecError(f"not an outcome: {obj!r:.200}") from exc


def encode_event(event: Event) -> bytes:
    """One event as bytes."""
    return orjson.dumps(event_to_json(event))


def decode_event(data: bytes) -> Event:
    """The event :func:`encode_event` wrote."""
    return event_from_json(_loads(data))


def encode_outcome(outcome: Outcome) -> bytes:
    """An outcome as bytes."""
    return orjson.dumps(outcome_to_json(outcome))


def decode_outcome(data: bytes) -> Outcome:
    """The outcome :func:`encode_outcome` wrote."""
    return outcome_from_json(_loads(data))


def encode_cached(answer: CachedAnswer) -> bytes:
    """A cached answer (its events and outcome) as bytes."""
    return orjson.dumps(
        {
            "events": [event_to_json(e) for e in answer.events],
            "outcome": outcome_to_json(answer.outcome),
        }
    )


def decode_cached(data: bytes) -> CachedAnswer:
    """The cached answer :func:`encode_cached` wrote."""
    # Imported here: chat.py may well import this module one day, and a
    # module-level import of chat.py would then be a cycle.
    from chatd.pipeline.request import CachedAnswer

    obj = _loads(data)
    try:
        events, outcome = obj["events"], obj["outcome"]
        return CachedAnswer(tuple(event_from_json(e) for e in events), outcome_from_json(outcome))
    except (KeyError, TypeError) as exc:
        raise CodecError(f"not a cached answer: {data[:200]!r}") from exc


def error_to_json(error: BaseException) -> dict[str, Any]:
    """An error as its class's dotted name, its ``args`` and its scalar attributes.

    Anything but a :class:`ChatdError` (a bug) goes as a plain ``internal``
    ChatdError: its details stay in the log of the instance it happened on.
    """
    if not isinstance(error, ChatdError):
        error = ChatdError("a shared answer failed on another instance")
    cls = type(error)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "args": [a for a in error.args if isinstance(a, _SCALARS)],
        "attrs": {k: v for k, v in vars(error).items() if isinstance(v, _SCALARS)},
    }


def error_from_json(obj: Any) -> ChatdError:
    """A fresh error like the one :func:`error_to_json` described.

    A class this process does not know (another version wrote it) comes back
    as a plain :class:`ChatdError` with the same message.
    """
    try:
        name, args, attributes = obj["class"], list(obj["args"]), dict(obj["attrs"])
        cls = _chatd_errors().get(name, ChatdError)
        error = cls.__new__(cls)
        error.args = tuple(args)
        error.__dict__.update(attributes)
        error.message = str(attributes.get("message", args[0] if args else ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"not an error: {obj!r:.200}") from exc
    return error


def _chatd_errors() -> dict[str, type[ChatdError]]:
    """Every ChatdError class loaded, by dotted name (subclasses may live anywhere)."""
    found: dict[str, type[ChatdError]] = {}
    todo: list[type[ChatdError]] = [ChatdError]
    while todo:
        cls = todo.pop()
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo.extend(cls.__subclasses__())
    return found


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {data[:200]!r}") from exc
