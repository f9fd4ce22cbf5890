"""Sans-IO reading of OpenAI chat-completions chunks into chatd's events.

:class:`ChunkAssembler` takes decoded SSE events and returns
:class:`~chatd.llm.types.ChatEvent`s: text pieces (merged when they arrived
together), the start of each tool call, and at the end one
:class:`~chatd.llm.types.Completion` with tool-call arguments assembled by
index. Anything that is not the documented shape is an
:class:`~chatd.exceptions.UpstreamProtocolError` naming what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from chatd.exceptions import UpstreamError, UpstreamProtocolError
from chatd.llm.sse import SSEEvent
from chatd.llm.types import ChatEvent, Completion, TextDelta, ToolCall, ToolCallBegin, Usage

__all__ = ["ChunkAssembler", "parse_completion"]


def _malformed(what: str, data: bytes | object) -> UpstreamProtocolError:
    shown = data[:200].decode("utf-8", "replace") if isinstance(data, bytes) else repr(data)
    return UpstreamProtocolError(f"malformed LLM stream: {what}: {shown[:200]}")


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt, completion = raw.get("prompt_tokens", 0), raw.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def _provider_error(obj: Mapping[str, Any]) -> UpstreamError:
    err = obj["error"]
    message = err.get("message") if isinstance(err, Mapping) else err
    return UpstreamError(f"LLM reported an error mid-stream: {message}")


@attrs.define
class _PartialCall:
    id: str
    name: str
    arguments: list[str] = attrs.field(factory=list)


@attrs.define
class ChunkAssembler:
    """Assembles one streamed chat completion from its SSE events."""

    _text: list[str] = attrs.field(factory=list, init=False)
    _calls: dict[int, _PartialCall] = attrs.field(factory=dict, init=False)
    _finish_reason: str | None = attrs.field(default=None, init=False)
    _usage: Usage | None = attrs.field(default=None, init=False)
    done: bool = attrs.field(default=False, init=False)
    """True once ``data: [DONE]`` arrived."""

    def feed(self, events: Iterable[SSEEvent]) -> list[ChatEvent]:
        """Take the SSE events of one read; return what they say, text merged."""
        out: list[ChatEvent] = []
        pending: list[str] = []
        for event in events:
            if event.data == b"[DONE]":
                self.done = True
                continue
            try:
                obj = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                raise _malformed("chunk is not JSON", event.data) from None
            if not isinstance(obj, dict):
                raise _malformed("chunk is not a JSON object", event.data)
            if "error" in obj:
                raise _provider_error(obj)
            self._usage = _usage(obj.get("usage")) or self._usage
            choices = obj.get("choices")
            if not isinstance(choices, list):
                raise _malformed("chunk has no choices list", event.data)
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue  # n > 1 is not asked for; only the first choice counts
                delta = choice.get("delta") or {}
                if not isinstance(delta, dict):
                    raise _malformed("delta is not an object", event.data)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    pending.append(content)
                if delta.get("tool_calls") is not None:
                    begun = self._feed_tool_calls(delta["tool_calls"], event.data)
                    if begun:
                        if pending:
                            out.append(self._delta(pending))
                            pending = []
                        out.extend(begun)
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    self._finish_reason = reason
        if pending:
            out.append(self._delta(pending))
        return out

    def _delta(self, pieces: list[str]) -> TextDelta:
        """One read's text, kept once (a token's own string costs ~50 bytes
        for its 3 characters: a 20,000-token answer held 1.2 MB)."""
        text = "".join(pieces)
        self._text.append(text)
        return TextDelta(text)

    def _feed_tool_calls(self, calls: object, data: bytes) -> list[ToolCallBegin]:
        if not isinstance(calls, list):
            raise _malformed("tool_calls is not a list", data)
        begun: list[ToolCallBegin] = []
        for call in calls:
            if not isinstance(call, dict):
                raise _malformed("tool call is not an object", data)
            index = call.get("index")
            if not isinstance(index, int):  # some servers omit it for a single call
                new = call.get("id") is not None and call.get("id") not in {
                    c.id for c in self._calls.values()
                }
                index = len(self._calls) if new or not self._calls else max(self._calls)
            function = call.get("function") or {}
            if not isinstance(function, dict):
                raise _malformed("tool call function is not an object", data)
            partial = self._calls.get(index)
            if partial is None:
                name = function.get("name")
                if not isinstance(name, str) or not name:
                    raise _malformed("a tool call began without a name", data)
                call_id = call.get("id")
                partial = _PartialCall(
                    call_id if isinstance(call_id, str) else f"call_{index}", name
                )
                self._calls[index] = partial
                begun.append(ToolCallBegin(index, partial.id, name))
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                partial.arguments.append(arguments)
            elif arguments is not None:  # a few servers send an object, not a string
                partial.arguments.append(orjson.dumps(arguments).decode())
        return begun

    def finish(self) -> Completion:
        """The stream ended: the whole completion, or an error if it was cut."""
        if not self.done and self._finish_reason is None:
            raise UpstreamProtocolError("LLM stream ended before it finished (no [DONE])")
        calls = tuple(
            ToolCall(c.id, c.name, "".join(c.arguments) or "{}")
            for _i, c in sorted(self._calls.items())
        )
        reason = self._finish_reason or ("tool_calls" if calls else "stop")
        return Completion("".join(self._text), calls, reason, self._usage)


def parse_completion(body: bytes) -> Completion:
    """A non-streamed ``chat.completion`` response body as a :class:`Completion`."""
    try:
        obj = orjson.loads(body)
        if isinstance(obj, dict) and "error" in obj:
            raise _provider_error(obj)
        choice = obj["choices"][0]
        message = choice["message"]
        calls = tuple(
            ToolCall(
                c.get("id") or f"call_{i}",
                c["function"]["name"],
                a
                if isinstance(a := c["function"].get("arguments", "{}"), str)
                else orjson.dumps(a).decode(),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        )
        content = message.get("content") or ""
        reason = choice.get("finish_reason") or ("tool_calls" if calls else "stop")
        return Completion(content, calls, reason, _usage(obj.get("usage")))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise _malformed("not a chat completion", body) from None
