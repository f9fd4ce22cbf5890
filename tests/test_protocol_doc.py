"""docs/protocol.md names everything the server sends: each event type, each
error code (with its HTTP status) and each close code; the README links it."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from chatd import exceptions
from chatd.exceptions import HTTP_STATUS
from chatd.pipeline.events import Event

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def error_codes() -> set[str]:
    codes: set[str] = set()
    pending: list[type[exceptions.ChatdError]] = [exceptions.ChatdError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


@pytest.mark.parametrize("event", [cls.type for cls in typing.get_args(Event)])
def test_every_event_type_is_documented(event: str) -> None:
    assert re.search(rf"^\| `{event}` \|", DOC, re.MULTILINE), event


@pytest.mark.parametrize("code", sorted(error_codes() | set(HTTP_STATUS)))
def test_every_error_code_is_documented_with_its_status(code: str) -> None:
    row = re.search(rf"^\| `{code}` \|.*\| (\d{{3}}) \|$", DOC, re.MULTILINE)
    assert row is not None, code
    assert int(row.group(1)) == HTTP_STATUS[code]


@pytest.mark.parametrize("close_code", [1000, 1001, 1008, 1009, 1011, 1013])
def test_every_close_code_is_documented(close_code: int) -> None:
    source = "".join(
        (ROOT / "chatd" / "server" / name).read_text()
        for name in ("app.py", "connection.py", "websocket.py")
    )
    assert str(close_code) in source
    assert f"| {close_code} |" in DOC


def test_every_close_code_the_server_uses_is_in_the_list() -> None:
    source = "".join(
        (ROOT / "chatd" / "server" / name).read_text()
        for name in ("app.py", "connection.py", "websocket.py")
    )
    used = {int(c) for c in re.findall(r"(?:close|CloseConnection)\((10\d\d)\b", source)}
    assert used
    assert used <= {1000, 1001, 1008, 1009, 1011, 1013}


def test_the_readme_links_the_protocol() -> None:
    assert "](docs/protocol.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
