"""Hypothesis strategies: WebSocket frames of every kind, bursts of them,
and ``POST /v1/chat`` bodies, each paired with the reply it must get
(:mod:`.replies`)."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from hypothesis import strategies as st

from .replies import MAX_FRAME, MAX_MESSAGE, Frame, frame, http_case

QUESTIONS = (
    "hello there",
    "what is 17*23?",
    "what is 1/0?",
    "How do I reset my password?",
    "what time is it?",
    "what is 2+2 and what time is it?",
    "who won the 1998 world cup?",
    "tell me a story",
)
SESSIONS = ("s1", "s2")
"""Few session names, so session history stays bounded however long the run."""
POOL_IDS = ("a", "b", "c", "réponse", "🙂", "x" * 128, "with space", '"q\\')
"""Ids most chats, cancels and pings use, so they collide with ones in flight."""


# -- Strategies ------------------------------------------------------------------------

printable = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), include_characters=" "
)


def _repeat(part: str, count: int) -> str:
    return part * count


def _around(before: str, middle: str, after: str) -> str:
    return before + middle + after


valid_ids = st.one_of(
    st.sampled_from(POOL_IDS),
    st.sampled_from(POOL_IDS),
    st.text(printable, min_size=1, max_size=12),
    st.builds(_repeat, st.sampled_from("zé中🙂"), st.integers(100, 128)),
)
# JSON values, built so that no draw is filtered: a filter's retries cost a
# description of the strategy each time, and that was a tenth of the run.
numbers = st.one_of(
    st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.one_of(st.none(), numbers, st.text(max_size=10))
arrays = st.lists(scalars, max_size=3)
objects = st.lists(
    st.tuples(st.sampled_from(["k", "lang", "ü", "", "type", "id"]), scalars), max_size=3
).map(dict)
json_values = st.one_of(scalars, arrays, objects)
not_strings = st.one_of(st.none(), numbers, arrays, objects)
not_objects = st.one_of(scalars, arrays)
invalid_ids = st.one_of(
    st.just(""),
    st.builds(_repeat, st.sampled_from("zé🙂"), st.integers(129, 140)),
    st.builds(
        _around, st.text(max_size=3), st.sampled_from("\n\t\x00\u200b\u2028"), st.text(max_size=3)
    ),
    not_strings,
)
messages = st.one_of(
    st.sampled_from(QUESTIONS),
    st.text(min_size=1, max_size=20),
    st.builds(_repeat, st.just("m"), st.integers(MAX_MESSAGE - 2, MAX_MESSAGE + 2)),
)
MISSING = object()


def _ordered(items: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``items`` as an object with its members in any order."""
    return st.permutations(list(items.items())).map(dict)


@st.composite
def chat_objects(draw: st.DrawFn, request_id: object) -> dict[str, Any]:
    """A well-formed chat (unless ``request_id`` is not a valid id); now and
    then with a session, metadata, an unknown member, its members shuffled."""
    fields: dict[str, Any] = {"type": "chat", "id": request_id, "message": draw(messages)}
    extras = draw(st.integers(0, 15))
    if extras & 1:
        fields["session"] = draw(st.sampled_from(SESSIONS))
    if extras & 2:
        fields["metadata"] = draw(objects)
    if extras & 4:
        fields["extra"] = draw(json_values)  # unknown members are ignored
    return draw(_ordered(fields)) if extras & 8 else fields


@st.composite
def chat_frames(draw: st.DrawFn, ids: st.SearchStrategy[str] = valid_ids) -> Frame:
    """A valid chat."""
    return frame(orjson.dumps(draw(chat_objects(draw(ids)))).decode(), "chat")


@st.composite
def bad_field_frames(draw: st.DrawFn) -> Frame:
    """A chat under a valid id with a field missing or of the wrong type."""
    fields = draw(chat_objects(draw(valid_ids)))
    field = draw(st.sampled_from(["message", "session", "metadata"]))
    wrong = {
        "message": st.one_of(st.just(MISSING), st.just(""), not_strings),
        "session": st.one_of(st.just(""), numbers, arrays, objects),
        "metadata": not_objects,
    }[field]
    value = draw(wrong)
    if value is MISSING:
        fields.pop(field, None)
    else:
        fields[field] = value
    return frame(orjson.dumps(fields).decode(), f"bad_{field}")


@st.composite
def control_frames(draw: st.DrawFn) -> Frame:
    """A cancel or a ping, its id valid, invalid or missing."""
    kind = draw(st.sampled_from(["cancel", "ping"]))
    fields: dict[str, Any] = {"type": kind}
    request_id = draw(st.one_of(valid_ids, invalid_ids, st.just(MISSING)))
    if request_id is not MISSING:
        fields["id"] = request_id
    return frame(orjson.dumps(draw(_ordered(fields))).decode(), kind)


@st.composite
def bad_id_frames(draw: st.DrawFn) -> Frame:
    """A chat whose id is invalid or missing."""
    fields = draw(chat_objects(draw(invalid_ids)))
    if draw(st.booleans()):
        del fields["id"]
    return frame(orjson.dumps(fields).decode(), "bad_id")


def _not_a_kind(text: str) -> str:
    return text + "!" if text in ("chat", "cancel", "ping") else text


@st.composite
def odd_type_frames(draw: st.DrawFn) -> Frame:
    """No type, a null one, an unknown one, or one that is not a string."""
    fields: dict[str, Any] = {"id": draw(st.one_of(valid_ids, invalid_ids)), "message": "hi"}
    kind = draw(
        st.one_of(
            st.just(MISSING),
            st.text(max_size=12).map(_not_a_kind),
            st.sampled_from(["Chat", "CHAT", "chat ", "pong", "done"]),
            not_strings,
        )
    )
    if kind is not MISSING:
        fields["type"] = kind
    return frame(orjson.dumps(draw(_ordered(fields))).decode(), "odd_type")


@st.composite
def not_json_frames(draw: st.DrawFn) -> Frame:
    """Text that is not a JSON object: a valid frame cut short, random text,
    JSON that is not an object, or escapes JSON does not allow."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        whole = orjson.dumps(draw(chat_objects(draw(valid_ids)))).decode()
        payload = whole[: draw(st.integers(0, len(whole) - 1))]
    elif choice == 1:
        payload = draw(st.text(max_size=30))
    elif choice == 2:
        payload = orjson.dumps(draw(not_objects)).decode()
    else:
        payload = draw(
            st.sampled_from(
                [
                    '{"type": "chat", "id": "\\ud800", "message": "hi"}',
                    '{"type": "chat", "id": "a", "message": "hi",}',
                    "{'type': 'chat'}",
                    '{"type": "ping"} {"type": "ping"}',
                    '{"type": NaN}',
                    "\ufeff{}",
                ]
            )
        )
    return frame(payload, "not_json")


@st.composite
def binary_frames(draw: st.DrawFn) -> Frame:
    """A binary message: random bytes, or a chat's JSON as bytes."""
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=40))
    else:
        payload = orjson.dumps(draw(chat_objects(draw(valid_ids))))
    return frame(payload, "binary")


@st.composite
def sized_frames(draw: st.DrawFn) -> Frame:
    """A frame of an exact size near or past ``max_frame_bytes``: a chat
    padded by an unknown member (its id before or after the padding), or
    plain text."""
    size = draw(
        st.one_of(
            st.integers(MAX_FRAME - 2, MAX_FRAME + 2), st.integers(MAX_FRAME + 3, 3 * MAX_FRAME)
        )
    )
    pad_char = draw(st.sampled_from(["x", "é", "中", "🙂"]))
    if draw(st.integers(0, 4)) == 0:
        return frame(pad_char * size, "sized_text")
    kind = draw(st.sampled_from(["chat", "chat", "ping", "cancel", "nope"]))
    request_id = draw(st.one_of(valid_ids, invalid_ids))
    id_first = draw(st.booleans())
    head = {"type": kind, "id": request_id}
    fields = {**head, "message": "hi", "pad": ""} if id_first else {"pad": "", **head}
    if kind == "chat" and not id_first:
        fields["message"] = "hi"
    short = len(orjson.dumps(fields).decode())
    fields["pad"] = pad_char * max(0, size - short)
    return frame(orjson.dumps(fields).decode(), "sized", prefix_id=request_id if id_first else None)


bad_frame = st.one_of(
    bad_field_frames(),
    bad_id_frames(),
    odd_type_frames(),
    not_json_frames(),
    binary_frames(),
    sized_frames(),
)
any_frame = st.one_of(chat_frames(), control_frames(), bad_frame)


@st.composite
def fragmented(draw: st.DrawFn, frames: st.SearchStrategy[Frame]) -> Frame:
    """A frame, now and then sent in several WebSocket frames."""
    one = draw(frames)
    if len(one.payload) > 1 and draw(st.integers(0, 5)) == 0:
        return attrs.evolve(one, fragments=draw(st.integers(2, 3)))
    return one


def _copies(one: Frame, count: int) -> list[Frame]:
    return [one] * count


chat_bursts = st.lists(
    fragmented(st.one_of(chat_frames(), chat_frames(), control_frames())), min_size=1, max_size=6
)
bad_bursts = st.lists(fragmented(bad_frame), min_size=1, max_size=4)
bursts = st.lists(fragmented(any_frame), min_size=1, max_size=6)
floods = st.builds(
    _copies,
    st.one_of(control_frames(), not_json_frames(), odd_type_frames(), binary_frames()),
    st.integers(10, 40),
)


# -- HTTP bodies -----------------------------------------------------------------------


@st.composite
def http_bodies(draw: st.DrawFn) -> bytes:
    """Valid bodies, bodies of an exact size near and past the limit, wrong
    types, non-objects, malformed JSON and invalid UTF-8."""
    fields = draw(chat_objects(None))
    del fields["type"], fields["id"]  # HTTP has neither
    choice = draw(st.integers(0, 6))
    if choice <= 1:
        return orjson.dumps(fields)
    if choice == 2:
        size = draw(st.integers(MAX_FRAME - 2, MAX_FRAME + 2) | st.just(3 * MAX_FRAME))
        fields["pad"] = ""
        fields["pad"] = "x" * max(0, size - len(orjson.dumps(fields)))
        return orjson.dumps(fields)
    if choice == 3:
        field = draw(st.sampled_from(["message", "session", "metadata"]))
        fields[field] = draw(not_strings)
        return orjson.dumps(fields)
    if choice == 4:
        return orjson.dumps(draw(not_objects))
    if choice == 5:
        whole = orjson.dumps(fields)
        return whole[: draw(st.integers(0, len(whole) - 1))]
    return draw(st.sampled_from([b"\xff\xfe{}", b'{"message": "\xc3("}', b""])) + draw(
        st.binary(max_size=20)
    )


http_cases = st.builds(
    http_case,
    http_bodies(),
    st.one_of(
        st.just("application/json"),
        st.sampled_from(
            [
                None,
                "Application/JSON ; charset=latin-1",
                "application/jsonx",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=zz",
            ]
        ),
    ),
    st.booleans(),
)
