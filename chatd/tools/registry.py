"""The tools a server offers, and running the calls the LLM makes to them.

:class:`ToolRegistry` turns a :class:`~chatd.llm.types.ToolCall` (a name and
raw JSON text from the model) into a :class:`ToolOutcome`, whatever happens on
the way: an unknown name, arguments that are not JSON or do not match the
schema, a tool that fails, hangs past its timeout or has a bug. All of these
become ``ok=False`` with an error the LLM can read, so one bad call never
ends the request. Only cancellation (and other ``BaseException``\\ s such as
``KeyboardInterrupt``) propagates: the request being cancelled must stop
its tools, not have them report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import attrs
import orjson
import structlog
import trio

from chatd.exceptions import ToolFailed
from chatd.llm.types import ToolCall
from chatd.tools.base import Tool, ToolContext, ToolResult
from chatd.tools.schema import validate

__all__ = ["OnToolEnd", "OnToolStart", "ToolOutcome", "ToolRegistry"]

log = structlog.get_logger(__name__)

_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}

OnToolStart = Callable[[ToolCall, dict[str, Any]], Awaitable[None]]
"""Called as a call starts, with its parsed arguments (``{}`` if unparseable)."""


@attrs.frozen
class ToolOutcome:
    """How one tool call ended: its result if ``ok``, else an error in words.

    ``arguments`` are the parsed arguments, ``{}`` when the model's JSON could
    not be parsed into an object. ``duration_ms`` is measured on trio's clock.
    """

    call_id: str
    tool: str
    arguments: dict[str, Any]
    ok: bool
    result: ToolResult | None
    error: str | None
    duration_ms: float

    @property
    def content(self) -> str:
        """What the LLM reads as the tool message: the result, or the error."""
        if self.result is not None:
            return self.result.content
        return f"Error: {self.error}"


OnToolEnd = Callable[[ToolOutcome], Awaitable[None]]
"""Called with each outcome as soon as that call ends."""


@attrs.frozen
class _Parsed:
    """A call's arguments after parsing, and why they are unusable, if they are."""

    arguments: dict[str, Any]
    error: str | None = None


def _index_by_name(tools: Iterable[Tool]) -> dict[str, Tool]:
    index: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in index:
            raise ValueError(f"two tools are named {tool.name!r}")
        index[tool.name] = tool
    return index


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be greater than 0, got {value!r}")


@attrs.define
class ToolRegistry:
    """The tools by name; runs calls to them with timeouts and never raises for them.

    A tool's own ``timeout_s`` wins over ``default_timeout_s``
    (``tools.timeout_s``). Names must be unique.
    """

    _tools: dict[str, Tool] = attrs.field(converter=_index_by_name, alias="tools")
    default_timeout_s: float = attrs.field(default=10.0, validator=_positive)

    @property
    def names(self) -> tuple[str, ...]:
        """The tools' names, in the order they were given."""
        return tuple(self._tools)

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def openai_tools(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The tools as OpenAI's ``tools`` request field, all or just ``names`` (in that order).

        Raises :class:`KeyError` for a name that is not registered.
        """
        chosen = self._tools.values() if names is None else [self._tools[n] for n in names]
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in chosen
        ]

    async def run(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        """Run one call to its end; failures come back as ``ok=False``, never raised."""
        return await self._run(call, self._parse(call), context)

    async def run_all(
        self,
        calls: Sequence[ToolCall],
        context: ToolContext,
        on_start: OnToolStart | None = None,
        on_end: OnToolEnd | None = None,
    ) -> list[ToolOutcome]:
        """Run ``calls`` side by side, each under its own timeout; outcomes in ``calls`` order.

        ``on_start`` and ``on_end`` (the pipeline's ``tool_start`` and
        ``tool_end`` events) are awaited in each call's task, outside its
        timeout, for every call, known tool or not. An exception from a
        callback is not a tool's: it cancels the other calls and propagates,
        wrapped in an exception group by the nursery.
        """
        outcomes: list[ToolOutcome | None] = [None] * len(calls)

        async def run_one(index: int, call: ToolCall) -> None:
            parsed = self._parse(call)
            if on_start is not None:
                await on_start(call, parsed.arguments)
            outcome = outcomes[index] = await self._run(call, parsed, context)
            if on_end is not None:
                await on_end(outcome)

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run_one, index, call, name=f"tool {call.name} {call.id}")
        return [outcome for outcome in outcomes if outcome is not None]

    def _parse(self, call: ToolCall) -> _Parsed:
        # Some OpenAI-compatible servers send "" for a call without arguments.
        if not call.arguments.strip():
            return _Parsed({})
        try:
            arguments = orjson.loads(call.arguments)
        except orjson.JSONDecodeError as exc:
            return _Parsed({}, f"arguments are not valid JSON ({exc})")
        if not isinstance(arguments, dict):
            kind = _JSON_KINDS.get(type(arguments), "a number")
            return _Parsed({}, f"arguments must be a JSON object, got {kind}")
        return _Parsed(arguments)

    async def _run(self, call: ToolCall, parsed: _Parsed, context: ToolContext) -> ToolOutcome:
        started = trio.current_time()

        def end(result: ToolResult | None, error: str | None = None) -> ToolOutcome:
            return ToolOutcome(
                call_id=call.id,
                tool=call.name,
                arguments=parsed.arguments,
                ok=error is None,
                result=result if error is None else None,
                error=error,
                duration_ms=(trio.current_time() - started) * 1000,
            )

        tool = self._tools.get(call.name)
        if tool is None:
            return end(None, f"unknown tool {call.name!r}")
        if parsed.error is not None:
            return end(None, parsed.error)

        # Only Exception is caught: trio.Cancelled is a BaseException, also
        # when a nursery inside the tool wraps it in a BaseExceptionGroup, so
        # a cancelled request stops its tools instead of hearing "it failed".
        try:
            # A schema validate() cannot read is the tool's bug, like a crash.
            problems = validate(tool.parameters, parsed.arguments)
            if problems:
                return end(None, "bad arguments: " + "; ".join(problems))
            timeout_s = tool.timeout_s or self.default_timeout_s
            with trio.move_on_after(timeout_s) as deadline:
                result = await tool.execute(parsed.arguments, context)
        except ToolFailed as exc:
            return end(None, exc.message)
        except Exception as exc:
            failed = _only_tool_failed(exc)
            if failed is not None:
                return end(None, failed.message)
            log.exception(
                "tool_crashed", tool=call.name, call_id=call.id, request_id=context.request_id
            )
            return end(None, f"internal error in tool {call.name!r}")
        if deadline.cancelled_caught:
            return end(None, f"timed out after {timeout_s:g} s")
        if not isinstance(result, ToolResult):
            log.error(
                "tool_bad_result",
                tool=call.name,
                call_id=call.id,
                request_id=context.request_id,
                result_type=type(result).__name__,
            )
            return end(None, f"internal error in tool {call.name!r}")
        return end(result)


def _only_tool_failed(exc: Exception) -> ToolFailed | None:
    """The first ToolFailed of a group that holds nothing else (a tool's own nursery)."""
    if isinstance(exc, ExceptionGroup):
        failed, rest = exc.split(ToolFailed)
        if failed is not None and rest is None:
            leaves: Exception = failed
            while isinstance(leaves, ExceptionGroup):
                leaves = leaves.exceptions[0]
            if isinstance(leaves, ToolFailed):
                return leaves
    return None
