"""Reading what clients send: one JSON object, and a chat's fields.

Shared by the WebSocket connection (frames) and ``POST /v1/chat`` (bodies),
so both refuse the same things with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from chatd.exceptions import ClientError, TooLarge

__all__ = ["chat_fields", "id_from_prefix", "json_object"]

_PREFIX_CHARS = 1024
"""How much of an oversized frame is read for its ``id``."""
_OPEN = re.compile(r"\s*\{")
_MEMBER = re.compile(
    r'\s*"((?:[^"\\]|\\.)*)"\s*:\s*'  # a key
    r'("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)'  # a scalar value
    r"\s*([,}])"
)


def byte_length(raw: str | bytes) -> int:
    """The size of ``raw`` on the wire (UTF-8): limits count bytes, whether a
    frame arrived as text or a body as bytes. ``isascii`` is a flag read."""
    if isinstance(raw, bytes) or raw.isascii():
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def json_object(raw: str | bytes, what: str, limit: int) -> dict[str, Any]:
    """``raw`` as a JSON object, or :class:`TooLarge` / :class:`ClientError`."""
    size = byte_length(raw)
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes; the limit is {limit}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClientError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ClientError(f"{what} must be a JSON object")
    return data


def id_from_prefix(raw: str | bytes) -> object:
    """The top-level ``id`` of a frame too large to parse, read from its first
    members: client libraries write ``type`` and ``id`` before the message, so
    the prefix has it. ``None`` when a member before it is not a plain scalar
    or runs past the prefix."""
    head = raw[:_PREFIX_CHARS]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    match = _OPEN.match(text)
    while match is not None:
        match = _MEMBER.match(text, match.end())
        if match is None:
            return None
        if match.group(1) == "id":
            try:
                return orjson.loads(match.group(2))
            except orjson.JSONDecodeError:
                return None
        if match.group(3) == "}":
            return None
    return None


def chat_fields(data: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """A chat's ``message``, optional ``session`` and ``metadata``, checked."""
    message, session, metadata = data.get("message"), data.get("session"), data.get("metadata", {})
    if not isinstance(message, str) or not message:
        raise ClientError("'message' must be a non-empty string")
    if session is not None and (not isinstance(session, str) or not session):
        raise ClientError("'session' must be a non-empty string")
    if not isinstance(metadata, dict):
        raise ClientError("'metadata' must be an object")
    return message, session, metadata
