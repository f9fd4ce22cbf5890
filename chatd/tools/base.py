"""What a tool is: the :class:`Tool` protocol, its context and its result.

A tool has a name, a description and a JSON-schema for its arguments (what
the LLM is offered), flags that steer the pipeline, and ``execute``.
Natural-answer tools (``frequently_asked``) may return a confident
``answer``; the pipeline then streams it straight to the client with
:meth:`Tool.stream` (Path B) instead of making a second LLM call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import trio

__all__ = [
    "BuiltinTool",
    "Speculative",
    "Tool",
    "ToolContext",
    "ToolResult",
    "stream_text",
    "string_argument",
]


@attrs.frozen
class ToolContext:
    """Who is asking: tools that are user-bound read this."""

    request_id: str
    session: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ToolResult:
    """What a tool found.

    ``content`` is what the LLM reads as the tool message (Path A).
    ``answer`` is set only by a natural-answer tool that is confident: the
    text the client may receive as is (Path B).
    """

    content: str
    answer: str | None = None


@runtime_checkable
class Tool(Protocol):
    """A tool the LLM can call. Raise :class:`chatd.exceptions.ToolFailed` to
    report a failure in words; any other exception is a bug in the tool and is
    reported to the LLM as an internal tool error."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, Any]:
        """JSON schema of the arguments (an object schema)."""
        ...

    @property
    def natural_answer(self) -> bool:
        """May answer the user directly (Path B) when confident."""
        ...

    @property
    def time_bound(self) -> bool:
        """Its result depends on the time: never cached or shared."""
        ...

    @property
    def user_bound(self) -> bool:
        """Its result depends on who asks: never cached or shared."""
        ...

    @property
    def timeout_s(self) -> float | None:
        """Its own time limit; ``None`` takes ``tools.timeout_s``."""
        ...

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Do the work; ``arguments`` already match :attr:`parameters`."""
        ...

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        """Send ``result.answer`` to the client in pieces (Path B).

        Most tools use :func:`stream_text`; a tool that generates its answer
        can send pieces as it makes them. Closing ``send`` is the caller's job.
        """
        ...


@runtime_checkable
class Speculative(Protocol):
    """A natural-answer tool whose arguments can be known before the router has
    streamed them (``frequently_asked`` takes the question as asked): the
    pipeline runs it as soon as the router names it, and asks it alone when
    the LLM is down."""

    def speculative_arguments(self, message: str) -> Mapping[str, Any] | None:
        """The arguments for ``message`` as typed; ``None`` if they cannot be told."""
        ...


async def stream_text(text: str, send: trio.MemorySendChannel[str], piece_chars: int = 48) -> None:
    """Send ``text`` in pieces of about ``piece_chars``, cut at spaces."""
    start = 0
    while start < len(text):
        end = min(len(text), start + piece_chars)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end
        await send.send(text[start:end])
        start = end


def string_argument(
    name: str, description: str, *, required: bool = True, **limits: int
) -> Mapping[str, Any]:
    """The JSON schema of a tool's arguments when they are one string, ``name``,
    with JSON-schema ``limits`` such as ``maxLength``."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: {"type": "string", "description": description, **limits}},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = [name]
    return schema


class BuiltinTool:
    """What the built-in tools share unless they say otherwise: no natural
    answer, neither time- nor user-bound, ``tools.timeout_s`` as their limit."""

    natural_answer: ClassVar[bool] = False
    time_bound: ClassVar[bool] = False
    user_bound: ClassVar[bool] = False
    timeout_s: float | None = None
