"""Declarative HTTP tools: an operator describes an endpoint in config, the LLM calls it.

Each ``[[tools.http]]`` entry (:class:`~chatd.config.settings.HTTPToolSettings`)
becomes one :class:`HTTPTool`. ``{name}`` in the URL and in header values is
replaced by the URL-quoted argument ``name`` (quoting also keeps a header
value on one line). The other arguments go in the query string for GET and
DELETE, and as the JSON body for POST and PUT.

The response body, decoded and cut to :data:`MAX_CONTENT_CHARS`, is what the
LLM reads; at most a little more than that is ever read off the socket. A
status outside 2xx, a refused connection or a timeout is a
:class:`~chatd.exceptions.ToolFailed` in words; no httpx exception leaves
this module. The ``httpx.AsyncClient`` is shared and owned by the caller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, cast
from urllib.parse import quote

import attrs
import httpx
import orjson
import trio

from chatd.config.settings import HTTPToolSettings, ToolsSettings
from chatd.exceptions import ConfigError, ToolFailed
from chatd.llm.stream import unwind
from chatd.tools.base import ToolContext, ToolResult, stream_text

__all__ = ["MAX_CONTENT_CHARS", "HTTPTool", "http_tools"]

MAX_CONTENT_CHARS = 4000
_ERROR_BODY_CHARS = 200
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _placeholders(settings: HTTPToolSettings) -> frozenset[str]:
    """The argument names the URL and header templates use."""
    templates = [settings.url, *settings.headers.values()]
    return frozenset(name for text in templates for name in _PLACEHOLDER.findall(text))


def _text(value: object) -> str:
    """An argument as text: JSON spelling for booleans, null and containers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _fill(template: str, arguments: Mapping[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in arguments:
            raise ToolFailed(f"the argument {name!r} is required for this request but missing")
        return quote(_text(arguments[name]), safe="")

    return _PLACEHOLDER.sub(replace, template)


def _query(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: [_text(item) for item in value] if isinstance(value, list) else _text(value)
        for name, value in arguments.items()
    }


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _check_settings(settings: HTTPToolSettings) -> None:
    declared = settings.parameters.get("properties", {})
    for name in sorted(_placeholders(settings)):
        if name not in declared:
            raise ConfigError(
                f"tools.http {settings.name!r}: the URL or a header uses {{{name}}}, "
                f"but parameters.properties has no {name!r}"
            )


@attrs.frozen
class HTTPTool(HTTPToolSettings):
    """One configured HTTP endpoint as a tool: its ``[[tools.http]]`` entry, whose
    ``name``, ``description``, ``parameters``, ``timeout_s``, ``time_bound`` and
    ``user_bound`` are what the LLM and the pipeline read, and the ``client`` it
    calls through (shared, not owned)."""

    natural_answer: ClassVar[bool] = False  # an API's raw answer is for the LLM to word
    client: httpx.AsyncClient = attrs.field(kw_only=True, eq=False, repr=False)
    _templated: frozenset[str] = attrs.field(init=False)

    @_templated.default
    def _templated_default(self) -> frozenset[str]:
        return _placeholders(self)

    def __attrs_post_init__(self) -> None:
        _check_settings(self)

    @classmethod
    def of(cls, settings: HTTPToolSettings, client: httpx.AsyncClient) -> HTTPTool:
        """The tool ``settings`` describes, calling through ``client``."""
        return cls(**attrs.asdict(settings, recurse=False), client=client)

    async def execute(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Make the request; the (truncated) response body is the content."""
        headers = {key: _fill(value, arguments) for key, value in self.headers.items()}
        rest = {key: value for key, value in arguments.items() if key not in self._templated}
        sends_body = self.method in ("POST", "PUT")
        try:
            url = httpx.URL(_fill(self.url, arguments))
        except httpx.InvalidURL as exc:
            raise ToolFailed(f"the URL is not valid: {exc}") from exc
        if rest and not sends_body:
            # Merged here: httpx's own params= would replace the URL's query, not add to it.
            url = url.copy_merge_params(_query(rest))
        host = url.host
        try:
            with trio.move_on_after(self.timeout_s) as deadline:
                async with self.client.stream(
                    self.method,
                    url,
                    headers=headers,
                    json=rest if sends_body else None,
                    timeout=self.timeout_s,
                ) as response:
                    text, truncated = await _read_text(response, MAX_CONTENT_CHARS)
        except httpx.TimeoutException as exc:
            raise ToolFailed(f"{host} did not answer within {self.timeout_s:g} s") from exc
        except httpx.ConnectError as exc:
            raise ToolFailed(f"could not connect to {host}: {_reason(exc)}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ToolFailed(f"the request to {host} failed: {_reason(exc)}") from exc
        if deadline.cancelled_caught:
            raise ToolFailed(f"{host} did not answer within {self.timeout_s:g} s")
        if not response.is_success:
            snippet = " ".join(text[:_ERROR_BODY_CHARS].split())
            raise ToolFailed(
                f"HTTP {response.status_code}: {snippet}"
                if snippet
                else f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            )
        if truncated:
            text += f"\n[response truncated to its first {MAX_CONTENT_CHARS} characters]"
        return ToolResult(content=text)

    async def stream(self, result: ToolResult, send: trio.MemorySendChannel[str]) -> None:
        """Send the answer as text."""
        await stream_text(result.answer or result.content, send)


async def _read_text(response: httpx.Response, limit: int) -> tuple[str, bool]:
    """The first ``limit`` characters of the body, and whether there was more."""
    chunks = cast(AsyncGenerator[str, None], response.aiter_text())
    pieces: list[str] = []
    size = 0
    try:
        async for chunk in chunks:
            pieces.append(chunk)
            size += len(chunk)
            if size > limit:
                return "".join(pieces)[:limit], True
        return "".join(pieces), False
    finally:
        await unwind(chunks)  # its nested generators too, not left to the collector


def http_tools(settings: ToolsSettings, client: httpx.AsyncClient) -> list[HTTPTool]:
    """One :class:`HTTPTool` per ``[[tools.http]]`` entry, all sharing ``client``."""
    return [HTTPTool.of(entry, client) for entry in settings.http]
