"""Reading frames: the id of a frame too large to parse, from its prefix."""

from __future__ import annotations

import pytest

from chatd.server.frames import id_from_prefix

BIG = "x" * 5000


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type": "chat", "id": "r1", "message": "' + BIG + '"}', "r1"),
        ('{"id":"r2","type":"chat","message":"' + BIG + '"}', "r2"),
        ('  {\n "type" : "chat" ,\n "id" : "r\\"3" , "message": "' + BIG + '"}', 'r"3'),
        ('{"n": 12.5e3, "ok": true, "none": null, "id": "r4", "message": "' + BIG + '"}', "r4"),
        ('{"id": 7, "message": "' + BIG + '"}', 7),  # read, then refused as no valid id
        ('{"message": "' + BIG + '", "id": "late"}', None),  # past the prefix
        ('{"metadata": {"id": "inner"}, "id": "outer", "message": "' + BIG + '"}', None),
        ('["id", "r5", "' + BIG + '"]', None),
        ("not json at all " + BIG, None),
        ('{"type": "chat"}', None),
    ],
)
def test_id_from_prefix(frame: str, expected: object) -> None:
    """The top-level id among the first scalar members, else None."""
    assert id_from_prefix(frame) == expected
    assert id_from_prefix(frame.encode()) == expected
