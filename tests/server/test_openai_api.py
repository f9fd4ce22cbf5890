"""``/v1/chat/completions`` bodies: what each optional member may be."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatd.server.openai_api import MODEL, InvalidRequest, parse_completion


def parsed(**members: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **members}
    return parse_completion(orjson.dumps(body), "key", "r1", None, 100_000)


def test_absent_and_null_members_take_their_defaults() -> None:
    for members in ({}, {"stream": None, "stream_options": None, "metadata": None}):
        completion = parsed(**members)
        assert (completion.stream, completion.include_usage) == (False, False)
        assert completion.chat.metadata == {}


def test_members_given_are_read() -> None:
    completion = parsed(stream=True, stream_options={"include_usage": True}, metadata={"a": "b"})
    assert (completion.stream, completion.include_usage) == (True, True)
    assert completion.chat.metadata == {"a": "b"}


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("stream", "yes", "'stream' must be a boolean"),
        ("stream", 0, "'stream' must be a boolean"),
        ("stream_options", [], "'stream_options' must be an object"),
        ("metadata", "tag", "'metadata' must be an object"),
    ],
)
def test_a_member_of_the_wrong_type_is_refused_by_name(
    member: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as refused:
        parsed(**{member: value})
    assert refused.value.param == member
