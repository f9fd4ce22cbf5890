"""Events, outcomes, cached answers and errors as bytes, for Redis.

What one instance records another replays: a flight's events and how it
ended (:mod:`chatd.pipeline.flights_redis`), and finished answers kept in a
shared cache. The bytes are orjson; the shapes are cattrs' unstructured attrs
classes, each event tagged with its wire ``type``. ``*_to_json`` and
``*_from_json`` give the JSON-ready objects, for records that carry several.

Errors travel as data, a :class:`~chatd.exceptions.Failure`, from which the
receiver raises a fresh exception of its own. Decoding anything malformed
raises :class:`CodecError`.
"""

from __future__ import annotations

from typing import Any

import cattrs
import orjson

from chatd.exceptions import Failure
from chatd.pipeline.events import EVENT_TYPES, Event, Token
from chatd.pipeline.request import CachedAnswer
from chatd.pipeline.turn import Outcome

__all__ = [
    "EVENT_TYPES",
    "CodecError",
    "decode_cached",
    "decode_event",
    "decode_outcome",
    "encode_cached",
    "encode_event",
    "encode_outcome",
    "event_from_json",
    "event_to_json",
    "failure_from_json",
    "failure_to_json",
    "outcome_from_json",
    "outcome_to_json",
]


_converter = cattrs.Converter(forbid_extra_keys=True)


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
    obj = _loads(data)
    try:
        events, outcome = obj["events"], obj["outcome"]
        return CachedAnswer(tuple(event_from_json(e) for e in events), outcome_from_json(outcome))
    except (KeyError, TypeError) as exc:
        raise CodecError(f"not a cached answer: {data[:200]!r}") from exc


def failure_to_json(failure: Failure) -> dict[str, Any]:
    """A failure as a JSON object."""
    obj: dict[str, Any] = _converter.unstructure(failure)
    return obj


def failure_from_json(obj: Any) -> Failure:
    """The failure :func:`failure_to_json` wrote."""
    try:
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        return _converter.structure(obj, Failure)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise CodecError(f"not a failure: {obj!r:.200}") from exc


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {data[:200]!r}") from exc
