"""Events, outcomes, cached answers and errors survive bytes unchanged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import exceptions
from chatd.exceptions import HTTP_STATUS, ChatdError, Failure
from chatd.pipeline import codec
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
from chatd.pipeline.request import CachedAnswer
from chatd.pipeline.turn import Outcome

text = st.text(max_size=20)
ints = st.integers(-(2**63), 2**63 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
tuples = st.lists(text, max_size=4).map(tuple)

EVENTS: dict[type[Any], st.SearchStrategy[Any]] = {
    Accepted: st.builds(Accepted, text),
    Queued: st.builds(Queued, ints),
    Route: st.builds(Route, text, tuples),
    ToolStart: st.builds(ToolStart, text, text, st.dictionaries(text, json_values, max_size=4)),
    ToolEnd: st.builds(ToolEnd, text, text, st.booleans(), ints, st.none() | text),
    Token: st.builds(Token, text),
    Done: st.builds(
        Done,
        text,
        text,
        st.none() | text,
        st.booleans(),
        st.booleans(),
        st.dictionaries(text, ints, max_size=3),
        st.dictionaries(text, st.none() | ints, max_size=3),
    ),
    Error: st.builds(Error, text, text, st.none() | ints),
    Pong: st.just(Pong()),
}
events = st.one_of(*EVENTS.values())
outcomes = st.builds(Outcome, text, ints, ints, tuples)


def test_every_event_type_has_a_strategy() -> None:
    """The round trip below covers every member of the Event union."""
    assert set(EVENTS) == set(codec.EVENT_TYPES.values()) == set(Event.__args__)  # type: ignore[attr-defined]


@given(events)
def test_event_round_trip(event: Event) -> None:
    """Each event decodes to an equal event of the same type."""
    back = codec.decode_event(codec.encode_event(event))
    assert back == event and type(back) is type(event)


@given(outcomes)
def test_outcome_round_trip(outcome: Outcome) -> None:
    """An outcome decodes equal, its tools a tuple again."""
    assert codec.decode_outcome(codec.encode_outcome(outcome)) == outcome


@given(st.lists(events, max_size=6).map(tuple), outcomes)
def test_cached_answer_round_trip(answer_events: tuple[Event, ...], outcome: Outcome) -> None:
    """A cached answer decodes equal: events in order, outcome whole."""
    answer = CachedAnswer(answer_events, outcome)
    assert codec.decode_cached(codec.encode_cached(answer)) == answer


def test_token_encodes_as_its_wire_shape() -> None:
    """The hot path writes the same shape as any other event."""
    assert orjson.loads(codec.encode_event(Token("hi"))) == {"type": "token", "text": "hi"}


ERRORS = [
    exceptions.ChatdError("plain"),
    exceptions.RateLimited("slow down", retry_after_ms=1500),
    exceptions.BreakerOpen("llm breaker open", retry_after_ms=30_000),
    exceptions.UpstreamRefused("busy", status=429, body="try later", retry_after_ms=2000),
    exceptions.UpstreamHTTPError("bad gateway", status=502, body="<html>"),
    exceptions.UpstreamProtocolError("garbage"),
    exceptions.UpstreamTimeout("too slow", phase="ttft"),
    exceptions.DeadlineExceeded("late"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_failure_round_trip_raises_the_same_code_afresh(error: ChatdError) -> None:
    """The receiver raises an exception of its own, of the code's class, with
    the same code, message, retry hint and detail."""
    failure = Failure.of(error)
    back = codec.failure_from_json(orjson.loads(orjson.dumps(codec.failure_to_json(failure))))
    assert back == failure
    raised = back.exception()
    assert raised is not error and isinstance(error, type(raised))
    assert (raised.code, raised.message) == (error.code, error.message)
    assert (raised.retry_after_ms, raised.detail) == (error.retry_after_ms, error.detail)
    assert failure.status == HTTP_STATUS[error.code]


def test_a_bug_travels_as_an_internal_failure() -> None:
    """Anything but a ChatdError becomes a plain internal one: details stay in its log."""
    back = Failure.of(KeyError("secret detail")).exception()
    assert type(back) is ChatdError and back.code == "internal"
    assert "secret" not in back.message
    logged = Failure.of(KeyError("secret detail"), "req_1").message
    assert logged == "internal error; the log has it under req_1"


def test_unknown_code_is_raised_as_an_internal_error() -> None:
    """A code this version does not know keeps its message."""
    back = codec.failure_from_json({"code": "future_code", "message": "new"}).exception()
    assert type(back) is ChatdError and back.message == "new"


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (codec.decode_event, b"not json"),
        (codec.decode_event, b'{"type": "nope"}'),
        (codec.decode_event, b'{"type": "queued", "position": "first"}'),
        (codec.decode_event, b'{"type": "token", "text": "a", "extra": 1}'),
        (codec.decode_event, b"[1, 2]"),
        (codec.decode_outcome, b'{"finish_reason": "stop"}'),
        (codec.decode_cached, b'{"events": []}'),
        (codec.decode_cached, b'{"events": [{"type": "pong"}], "outcome": 3}'),
    ],
)
def test_malformed_input_raises_codec_error(decode: Any, data: bytes) -> None:
    """Garbage is refused with one exception type."""
    with pytest.raises(codec.CodecError):
        decode(data)


@pytest.mark.parametrize(
    "obj", [{"message": "no code"}, {"code": "timeout", "message": "m", "extra": 1}, [1], None]
)
def test_malformed_failure_raises_codec_error(obj: Any) -> None:
    """A failure record that is not one is refused like any other garbage."""
    with pytest.raises(codec.CodecError):
        codec.failure_from_json(obj)
