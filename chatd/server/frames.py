"""Reading what clients send: one JSON object, and a chat's fields.

Shared by the WebSocket connection (frames) and ``POST /v1/chat`` (bodies),
so both refuse the same things with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chatd.exceptions import ClientError, TooLarge

__all__ = ["chat_fields", "json_object"]


def json_object(raw: str | bytes, what: str, limit: int) -> dict[str, Any]:
    """``raw`` as a JSON object, or :class:`TooLarge` / :class:`ClientError`."""
    if len(raw) > limit:
        raise TooLarge(f"{what} is {len(raw)} bytes; the limit is {limit}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClientError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ClientError(f"{what} must be a JSON object")
    return data


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
