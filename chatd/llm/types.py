"""What goes into an LLM call and what comes out of it.

Messages and tool definitions stay in OpenAI's JSON shape (plain dicts), the
lingua franca of every compatible server; what the stream yields are small
frozen events. A stream yields :class:`TextDelta` and :class:`ToolCallBegin`
events as they arrive and ends with exactly one :class:`Completion`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

__all__ = [
    "ChatEvent",
    "ChatRequest",
    "Completion",
    "Message",
    "TextDelta",
    "ToolCall",
    "ToolCallBegin",
    "Usage",
    "estimate_prompt_tokens",
    "estimate_tokens",
]

Message = Mapping[str, Any]
"""One chat message as OpenAI defines it: ``{"role": ..., "content": ...}``."""


def estimate_tokens(text: str) -> int:
    """About four characters a token, OpenAI's rule of thumb; 0 for no text."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A prompt's tokens, estimated as :func:`estimate_tokens` does; at least 1."""
    chars = 0
    for message in messages:
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else len(orjson.dumps(content))
        if message.get("tool_calls"):
            chars += len(orjson.dumps(message["tool_calls"]))
    return max(1, chars // 4)


@attrs.frozen
class ChatRequest:
    """One chat-completions call. ``model`` falls back to the configured one."""

    messages: Sequence[Message]
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    model: str | None = None

    def to_json(self, default_model: str, *, stream: bool) -> dict[str, Any]:
        """The request body, with only the fields that are set."""
        body: dict[str, Any] = {
            "model": self.model or default_model,
            "messages": list(self.messages),
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.tools:
            body["tools"] = list(self.tools)
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body


@attrs.frozen
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.frozen
class TextDelta:
    """The next piece of the answer text (pieces read together are merged)."""

    text: str


@attrs.frozen
class ToolCallBegin:
    """The model started calling a tool; its arguments are still streaming."""

    index: int
    id: str
    name: str


@attrs.frozen
class ToolCall:
    """A complete tool call. ``arguments`` is the raw JSON text the model sent:
    it may be invalid, and the tool layer turns that into a tool error."""

    id: str
    name: str
    arguments: str


@attrs.frozen
class Completion:
    """The end of a call: the whole text, the tool calls, why it stopped."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage | None = None


ChatEvent = TextDelta | ToolCallBegin | Completion
