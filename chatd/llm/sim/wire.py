"""OpenAI's chat-completions wire format, encoded for the simulator.

Streams are the hot path: a load test pushes hundreds of thousands of chunks
through here. :class:`ChunkEncoder` therefore builds, once per stream, the
bytes before and after a chunk's varying part, so a content chunk costs one
``orjson.dumps`` of the token and two concatenations. Everything else (the
first chunk, tool-call heads, the final and usage chunks, whole responses) is
built from dicts, which is clearer and rare enough not to matter.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

__all__ = [
    "DONE",
    "ChunkEncoder",
    "completion_body",
    "error_body",
    "new_completion_id",
    "new_tool_call_id",
    "usage",
]

DONE = b"data: [DONE]\n\n"


def new_completion_id() -> str:
    """A fresh ``chatcmpl-…`` id, as OpenAI makes them."""
    return "chatcmpl-" + secrets.token_hex(12)


def new_tool_call_id() -> str:
    """A fresh ``call_…`` id for one tool call."""
    return "call_" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error envelope: ``{"error": {"message", "type", "code"}}``."""
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, int],
) -> bytes:
    """A whole non-streamed ``chat.completion`` response."""
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
    )


class ChunkEncoder:
    """The SSE events of one streamed completion, sharing its id, created and model."""

    __slots__ = (
        "_args_head",
        "_args_tail",
        "_content_head",
        "_content_tail",
        "_envelope",
        "_include_usage",
    )

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self._envelope: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        # The invariant bytes around a delta, cut from a real encoding so the
        # templates cannot drift from what _event() produces.
        marker = "\x00delta\x00"
        whole = self._event({"content": marker}, None)
        encoded_marker = orjson.dumps(marker)
        head, _, tail = whole.rpartition(encoded_marker)
        self._content_head, self._content_tail = head, tail
        whole = self._event({"tool_calls": [{"index": 0, "function": {"arguments": marker}}]}, None)
        head, _, tail = whole.rpartition(encoded_marker)
        self._args_head = head.removesuffix(b'{"index":0,"function":{"arguments":')
        self._args_tail = tail

    def content(self, token: str) -> bytes:
        """A chunk carrying ``token`` as ``delta.content``."""
        return self._content_head + orjson.dumps(token) + self._content_tail

    def arguments(self, index: int, piece: str) -> bytes:
        """A chunk carrying the next ``piece`` of tool call ``index``'s arguments."""
        return (
            self._args_head
            + b'{"index":%d,"function":{"arguments":' % index
            + orjson.dumps(piece)
            + self._args_tail
        )

    def first(self) -> bytes:
        """The first chunk of a text answer: the role, and empty content."""
        return self._event({"role": "assistant", "content": ""}, None)

    def tool_call_head(self, index: int, call_id: str, name: str, *, first: bool) -> bytes:
        """The chunk opening tool call ``index``; the first one also carries the role."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        delta: dict[str, Any] = {"tool_calls": [call]}
        if first:
            delta = {"role": "assistant", "content": None, "tool_calls": [call]}
        return self._event(delta, None)

    def finish(self, reason: str) -> bytes:
        """The last choice chunk: an empty delta and the ``finish_reason``."""
        return self._event({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The ``stream_options.include_usage`` chunk: no choices, the usage."""
        event = dict(self._envelope)
        event["choices"] = []
        event["usage"] = usage(prompt_tokens, completion_tokens)
        return b"data: " + orjson.dumps(event) + b"\n\n"

    def _event(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        event = dict(self._envelope)
        event["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self._include_usage:  # OpenAI: every chunk but the last has "usage": null
            event["usage"] = None
        return b"data: " + orjson.dumps(event) + b"\n\n"
